"""Alembic operations shared by every service's first migration."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def create_common_tables(schema: str) -> None:
    """`processed_events` (idempotent consumers) and `outbox` (events published after commit)."""
    op.create_table(
        "processed_events",
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.Uuid, primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        schema=schema,
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Uuid, primary_key=True),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        schema=schema,
    )


def drop_common_tables(schema: str) -> None:
    op.drop_table("outbox", schema=schema)
    op.drop_table("processed_events", schema=schema)
