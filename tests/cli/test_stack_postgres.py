"""Embedded Postgres (as root it runs as its own system user): URL, stop, durable data."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from cli.stack import supervisor
from cli.stack.embedded_postgres import plain_url, start_postgres


@pytest.fixture
def postgres(home):
    started = []

    def start():
        started.append(start_postgres(home))
        return started[-1]

    yield start
    supervisor.stop_all([server.record for server in started])


async def test_url_works_for_asyncpg_and_sqlalchemy(postgres):
    server = postgres()
    assert server.url.startswith("postgresql+asyncpg://postgres@/nexus?host=/")

    conn = await asyncpg.connect(plain_url(server.url))
    try:
        assert await conn.fetchval("select 1") == 1
    finally:
        await conn.close()

    # The services use SQLAlchemy's asyncpg dialect with this exact URL.
    engine = create_async_engine(server.url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("select current_database()"))).scalar() == "nexus"
    finally:
        await engine.dispose()


async def test_stop_then_restart_keeps_the_data(postgres):
    first = postgres()
    conn = await asyncpg.connect(plain_url(first.url))
    await conn.execute("create table kept (value text)")
    await conn.execute("insert into kept values ('survives a restart')")
    await conn.close()

    assert supervisor.stop(first.record) is True
    assert not supervisor.is_alive(first.record)
    with pytest.raises((OSError, asyncpg.PostgresError)):
        await asyncpg.connect(plain_url(first.url), timeout=2)

    second = postgres()
    assert second.record.pid != first.record.pid
    conn = await asyncpg.connect(plain_url(second.url))
    try:
        assert await conn.fetchval("select value from kept") == "survives a restart"
    finally:
        await conn.close()
