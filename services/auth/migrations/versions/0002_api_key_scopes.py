"""auth: API keys get scopes and an optional expiry; keys made before keep every scope

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "auth"
EVERY_SCOPE = '["workflows:read", "workflows:write", "models:predict", "memory:write"]'


def upgrade() -> None:
    op.add_column(
        "api_keys",
        sa.Column("scopes", sa.JSON, nullable=False, server_default=sa.text(f"'{EVERY_SCOPE}'")),
        schema=SCHEMA,
    )
    op.alter_column("api_keys", "scopes", server_default=None, schema=SCHEMA)
    op.add_column(
        "api_keys", sa.Column("expires_at", sa.DateTime(timezone=True)), schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_column("api_keys", "expires_at", schema=SCHEMA)
    op.drop_column("api_keys", "scopes", schema=SCHEMA)
