"""A transaction Postgres aborts to break a deadlock is run again (the event redelivered),
not reported as the phase failing: two handlers meeting on one row is no fault of the job."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy.exc
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from shared.contracts import PhaseFailed
from shared.db import database_conflict, database_unavailable
from shared.phases import run_phase_step


async def _a_real_deadlock(database_url: str) -> BaseException:
    """Two transactions locking two rows in opposite orders; Postgres aborts one of them."""
    engine = create_async_engine(database_url.replace("postgresql://", "postgresql+asyncpg://"))
    table = f"deadlock_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY)"))
        await conn.execute(text(f"INSERT INTO {table} VALUES (1), (2)"))
    both_hold_one = asyncio.Barrier(2)

    async def lock(conn: AsyncConnection, first: int, second: int) -> None:
        async with conn.begin():
            await conn.execute(text(f"SELECT * FROM {table} WHERE id = {first} FOR UPDATE"))
            await both_hold_one.wait()
            await conn.execute(text(f"SELECT * FROM {table} WHERE id = {second} FOR UPDATE"))

    try:
        async with engine.connect() as one, engine.connect() as other:
            outcomes = await asyncio.wait_for(
                asyncio.gather(lock(one, 1, 2), lock(other, 2, 1), return_exceptions=True), 30
            )
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE {table}"))
        await engine.dispose()
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1, outcomes
    return errors[0]


async def test_a_deadlock_postgres_broke_is_a_conflict_to_retry(migrated_database: str) -> None:
    error = await _a_real_deadlock(migrated_database)
    assert isinstance(error, sqlalchemy.exc.DBAPIError), repr(error)
    assert database_conflict(error), repr(error)
    assert not database_unavailable(error)


def test_other_refusals_are_not_conflicts() -> None:
    assert not database_conflict(sqlalchemy.exc.IntegrityError("insert", {}, Exception("dup")))
    assert not database_conflict(ValueError("a bug"))


class _UnitOfWork:
    async def first_time(self, consumer: str, event_id: uuid.UUID) -> bool:
        return True


class _Context:
    @contextlib.asynccontextmanager
    async def unit_of_work(self) -> AsyncIterator[_UnitOfWork]:
        yield _UnitOfWork()


async def test_a_step_aborted_by_a_deadlock_is_raised_for_redelivery(
    migrated_database: str,
) -> None:
    deadlock = await _a_real_deadlock(migrated_database)
    event = PhaseFailed(workflow_id=uuid.uuid4(), tenant_id="t", phase=2, reason="any")

    async def step(uow: Any) -> None:
        raise deadlock

    async def record_failure(uow: Any, reason: str) -> None:
        raise AssertionError(f"the phase was failed: {reason}")

    with pytest.raises(sqlalchemy.exc.DBAPIError):
        await run_phase_step(_Context(), event, "consumer", 3, step, record_failure)  # type: ignore[arg-type]
