"""The body of every service's Alembic `env.py`: each service migrates its own Postgres
schema and keeps its own `alembic_version` table inside it."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


def run_migrations(metadata: MetaData) -> None:
    schema = metadata.schema
    assert schema, "every service's metadata names its schema"
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is set by shared.migrate"
    asyncio.run(_run_async(url, metadata, schema))


async def _run_async(url: str, metadata: MetaData, schema: str) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            # Two processes migrating one schema at once would race on DDL; serialize them.
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await conn.run_sync(_run_sync, metadata, schema)
    finally:
        await engine.dispose()


def _run_sync(connection: Connection, metadata: MetaData, schema: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=True,
        transaction_per_migration=False,
    )
    context.run_migrations()
