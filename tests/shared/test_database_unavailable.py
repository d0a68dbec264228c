"""Which failures of a phase step count as the database being away (the event is then
redelivered once it is back) rather than as the phase failing."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy.exc
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import database_unavailable


async def test_a_refused_connection_is_the_database_being_away() -> None:
    # A port nothing listens on: what a service meets while Postgres restarts.
    engine = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")
    # Whatever the driver raises for it (an OSError today) is what must be recognised.
    with pytest.raises((OSError, sqlalchemy.exc.DBAPIError)) as caught:
        async with engine.connect():
            pass
    await engine.dispose()
    assert database_unavailable(caught.value), repr(caught.value)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        ConnectionResetError("reset by peer"),
        sqlalchemy.exc.OperationalError("select 1", {}, Exception("server closed")),
    ],
)
def test_a_server_going_or_starting_is_the_database_being_away(error: Exception) -> None:
    assert database_unavailable(error)


@pytest.mark.parametrize(
    "error",
    [
        sqlalchemy.exc.IntegrityError("insert", {}, Exception("duplicate key")),
        ValueError("a bug"),
        KeyError("missing"),
    ],
)
def test_a_statement_refused_or_a_bug_is_not(error: Exception) -> None:
    assert not database_unavailable(error)
