"""deployer: models, deployments, and the common event tables

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

SCHEMA = "deployer"


def upgrade() -> None:
    create_common_tables(SCHEMA)
    op.create_table(
        "models",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.Uuid, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("model_uri", sa.String(1024), nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "name", "version", name="uq_models_version"),
        schema=SCHEMA,
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("model_id", sa.Uuid, sa.ForeignKey(f"{SCHEMA}.models.id"), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("workflow_id", sa.Uuid, nullable=False),
        sa.Column("port", sa.Integer, nullable=True),
        sa.Column("url", sa.String(300), nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column(
            "previous_deployment_id",
            sa.Uuid,
            sa.ForeignKey(f"{SCHEMA}.deployments.id"),
            nullable=True,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("checks", sa.JSON, nullable=True),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_deployments_tenant_status", "deployments", ["tenant_id", "status"], schema=SCHEMA
    )
    op.create_index("ix_deployments_model", "deployments", ["model_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("deployments", schema=SCHEMA)
    op.drop_table("models", schema=SCHEMA)
    drop_common_tables(SCHEMA)
