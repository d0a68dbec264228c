"""trainer: architectures, training_jobs, training_epochs, and the common event tables

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

SCHEMA = "trainer"


def upgrade() -> None:
    create_common_tables(SCHEMA)
    op.create_table(
        "architectures",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("workflow_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("architecture", sa.JSON, nullable=False),
        sa.Column("parameter_count", sa.Integer, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "training_jobs",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("workflow_id", sa.Uuid, nullable=False, index=True),
        sa.Column("tenant_id", sa.String(64), nullable=False, index=True),
        sa.Column("cluster_id", sa.Uuid, nullable=False),
        sa.Column("node_id", sa.String(128), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=True),
        sa.Column("model_uri", sa.Text, nullable=True),
        sa.Column("checkpoints", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        schema=SCHEMA,
    )
    op.create_table(
        "training_epochs",
        sa.Column(
            "job_id",
            sa.Uuid,
            sa.ForeignKey(f"{SCHEMA}.training_jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("epoch", sa.Integer, primary_key=True),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    op.drop_table("training_epochs", schema=SCHEMA)
    op.drop_table("training_jobs", schema=SCHEMA)
    op.drop_table("architectures", schema=SCHEMA)
    drop_common_tables(SCHEMA)
