"""validator: validations, and the common event tables

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

SCHEMA = "validator"


def upgrade() -> None:
    create_common_tables(SCHEMA)
    op.create_table(
        "validations",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.Uuid, nullable=False),
        sa.Column("cluster_id", sa.Uuid, nullable=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("model_uri", sa.String(1024), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("gates", sa.JSON, nullable=False),
        sa.Column("results", sa.JSON, nullable=False),
        sa.Column("report_uri", sa.String(1024), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'passed', 'failed', 'error')",
            name="ck_validations_status",
        ),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_validations_tenant_workflow",
        "validations",
        ["tenant_id", "workflow_id"],
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("validations", schema=SCHEMA)
    drop_common_tables(SCHEMA)
