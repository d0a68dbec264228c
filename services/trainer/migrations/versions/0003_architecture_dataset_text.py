"""trainer: an architecture's dataset may be a stored dataset's location (a URL longer than
a built-in's name)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SCHEMA = "trainer"


def upgrade() -> None:
    op.alter_column(
        "architectures", "dataset", type_=sa.Text, existing_type=sa.String(64), schema=SCHEMA
    )


def downgrade() -> None:
    op.alter_column(
        "architectures", "dataset", type_=sa.String(64), existing_type=sa.Text, schema=SCHEMA
    )
