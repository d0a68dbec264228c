"""cluster: a workflow or one of its phases changing is announced on a NOTIFY channel, so a
workflow's event stream (GET /workflows/{id}/events) wakes at once instead of polling

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = "cluster"
# services/cluster/workflow_changes.py listens on it; the payload is the workflow's id.
CHANNEL = "cluster_workflow_changed"


def upgrade() -> None:
    # NOTIFY is sent when the transaction commits, once per distinct payload: a transaction
    # that touches a workflow and three of its phases announces it once.
    op.execute(
        f"""
        CREATE FUNCTION {SCHEMA}.notify_workflow_changed() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_TABLE_NAME = 'workflows' THEN
                PERFORM pg_notify('{CHANNEL}', NEW.id::text);
            ELSE
                PERFORM pg_notify('{CHANNEL}', NEW.workflow_id::text);
            END IF;
            RETURN NULL;
        END
        $$
        """
    )
    for table in ("workflows", "workflow_phases"):
        op.execute(
            f"CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE ON {SCHEMA}.{table} "
            f"FOR EACH ROW EXECUTE FUNCTION {SCHEMA}.notify_workflow_changed()"
        )


def downgrade() -> None:
    for table in ("workflows", "workflow_phases"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_changed ON {SCHEMA}.{table}")
    op.execute(f"DROP FUNCTION IF EXISTS {SCHEMA}.notify_workflow_changed()")
