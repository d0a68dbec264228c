"""The unit of work publishes events only after commit, and the outbox survives a failed
publish until the relay sends it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from services.memory.models import Base, MemoryEntry
from shared.contracts import PhaseFailed
from shared.db import UnitOfWork, create_engine, make_sessionmaker, relay_outbox

OUTBOX = Base.metadata.tables["memory.outbox"]


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.fail = fail

    async def __call__(self, subject: str, payload: dict[str, Any], headers: dict[str, str]):
        if self.fail:
            raise ConnectionError("NATS is down")
        self.sent.append((subject, payload, headers))


@pytest.fixture
async def sessionmaker(migrated_database: str):  # type: ignore[no-untyped-def]
    engine = create_engine(migrated_database.replace("postgresql://", "postgresql+asyncpg://"))
    yield make_sessionmaker(engine)
    await engine.dispose()


def _event(tenant: str) -> PhaseFailed:
    return PhaseFailed(workflow_id=uuid.uuid4(), tenant_id=tenant, phase=2, reason="r")


def _entry(tenant: str) -> MemoryEntry:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return MemoryEntry(
        tenant_id=tenant, namespace="n", key="k", value=1, version=1, created_at=now, updated_at=now
    )


async def _outbox_rows(sessionmaker, event_id: uuid.UUID) -> int:  # type: ignore[no-untyped-def]
    async with sessionmaker() as session:
        count = await session.scalar(
            select(func.count()).where(OUTBOX.c.payload["event_id"].as_string() == str(event_id))
        )
        return int(count or 0)


async def test_commit_publishes_after_the_data_is_stored(sessionmaker, tenant_id: str) -> None:  # type: ignore[no-untyped-def]
    recorder = Recorder()
    event = _event(tenant_id)
    async with UnitOfWork(sessionmaker, Base.metadata, recorder) as uow:
        uow.session.add(_entry(tenant_id))
        await uow.emit(event)
        assert recorder.sent == []  # nothing leaves before the commit

    assert [s for s, _, _ in recorder.sent] == ["nexus.phase2.failed"]
    _, payload, headers = recorder.sent[0]
    assert payload["event_id"] == str(event.event_id)
    assert headers["Nats-Msg-Id"] == str(event.event_id)
    assert await _outbox_rows(sessionmaker, event.event_id) == 0


async def test_rollback_drops_events_and_data(sessionmaker, tenant_id: str) -> None:  # type: ignore[no-untyped-def]
    recorder = Recorder()
    event = _event(tenant_id)
    with pytest.raises(RuntimeError):
        async with UnitOfWork(sessionmaker, Base.metadata, recorder) as uow:
            uow.session.add(_entry(tenant_id))
            await uow.emit(event)
            raise RuntimeError("handler failed")

    assert recorder.sent == []
    assert await _outbox_rows(sessionmaker, event.event_id) == 0
    async with sessionmaker() as session:
        assert await session.get(MemoryEntry, (tenant_id, "n", "k")) is None


async def test_failed_publish_stays_in_outbox_until_relayed(sessionmaker, tenant_id: str) -> None:  # type: ignore[no-untyped-def]
    event = _event(tenant_id)
    async with UnitOfWork(sessionmaker, Base.metadata, Recorder(fail=True)) as uow:
        await uow.emit(event)  # the commit stands even though NATS refused the publish
    assert await _outbox_rows(sessionmaker, event.event_id) == 1  # committed, not yet sent

    relay = Recorder()
    await relay_outbox(sessionmaker, Base.metadata, relay, older_than_s=0)
    assert str(event.event_id) in {p["event_id"] for _, p, _ in relay.sent}
    assert await _outbox_rows(sessionmaker, event.event_id) == 0


async def test_first_time_detects_redelivery(sessionmaker) -> None:  # type: ignore[no-untyped-def]
    event_id = uuid.uuid4()
    async with UnitOfWork(sessionmaker, Base.metadata, None) as uow:
        assert await uow.first_time("test-consumer", event_id)
    async with UnitOfWork(sessionmaker, Base.metadata, None) as uow:
        assert not await uow.first_time("test-consumer", event_id)


async def test_after_commit_actions_run_once_committed_and_never_on_rollback(
    sessionmaker, tenant_id: str
) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, int]] = []

    async def stored_rows() -> None:
        async with sessionmaker() as session:
            count = await session.scalar(
                select(func.count()).where(MemoryEntry.tenant_id == tenant_id)
            )
        seen.append(("after commit", int(count or 0)))

    async with UnitOfWork(sessionmaker, Base.metadata, Recorder()) as uow:
        uow.session.add(_entry(tenant_id))
        uow.after_commit(stored_rows)
        assert seen == []  # not while the transaction is open
    assert seen == [("after commit", 1)]  # the action sees the committed row

    with pytest.raises(RuntimeError):
        async with UnitOfWork(sessionmaker, Base.metadata, Recorder()) as uow:
            uow.after_commit(stored_rows)
            raise RuntimeError("the step failed")
    assert seen == [("after commit", 1)]  # dropped with the rollback
