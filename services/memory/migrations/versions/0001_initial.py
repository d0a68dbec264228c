"""memory: entries, history, and the common event tables

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from shared.migration_ops import create_common_tables, drop_common_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "memory"


def upgrade() -> None:
    create_common_tables(SCHEMA)
    op.create_table(
        "entries",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(256), primary_key=True),
        sa.Column("value", sa.JSON, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "history",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("namespace", sa.String(128), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("operation", sa.String(10), nullable=False),
        sa.Column("value", sa.JSON, nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_history_key", "history", ["tenant_id", "namespace", "key", "version"], schema=SCHEMA
    )


def downgrade() -> None:
    op.drop_table("history", schema=SCHEMA)
    op.drop_table("entries", schema=SCHEMA)
    drop_common_tables(SCHEMA)
