"""cluster: workflows, workflow_phases, clusters, nodes, and the common event tables

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

SCHEMA = "cluster"


def upgrade() -> None:
    create_common_tables(SCHEMA)
    op.create_table(
        "workflows",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("current_phase", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("progress", sa.JSON, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_workflows_tenant_created", "workflows", ["tenant_id", "created_at"], schema=SCHEMA
    )
    op.create_table(
        "workflow_phases",
        sa.Column(
            "workflow_id",
            sa.Uuid,
            sa.ForeignKey(f"{SCHEMA}.workflows.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("phase", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(20), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.JSON, nullable=True),
        schema=SCHEMA,
    )
    op.create_table(
        "clusters",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("workflow_id", sa.Uuid, nullable=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("layout", sa.JSON, nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("topology", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_clusters_workflow_id", "clusters", ["workflow_id"], schema=SCHEMA)
    op.create_index(
        "ix_clusters_tenant_created", "clusters", ["tenant_id", "created_at"], schema=SCHEMA
    )
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column(
            "cluster_id",
            sa.Uuid,
            sa.ForeignKey(f"{SCHEMA}.clusters.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        schema=SCHEMA,
    )
    op.create_index("ix_nodes_cluster_id", "nodes", ["cluster_id"], schema=SCHEMA)


def downgrade() -> None:
    op.drop_table("nodes", schema=SCHEMA)
    op.drop_table("clusters", schema=SCHEMA)
    op.drop_table("workflow_phases", schema=SCHEMA)
    op.drop_table("workflows", schema=SCHEMA)
    drop_common_tables(SCHEMA)
