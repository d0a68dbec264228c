"""Async SQLAlchemy plumbing shared by every service.

Each service owns one Postgres schema. The boundary (an HTTP request or a message handler)
owns the transaction through `UnitOfWork`: domain code only adds and flushes; events emitted
inside the unit are written to the service's outbox table in the same transaction and
published to NATS only after the commit, so a rollback drops them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import sqlalchemy.exc
from opentelemetry import propagate
from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    DateTime,
    MetaData,
    Select,
    String,
    Table,
    delete,
    select,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.types import Uuid

from shared.contracts import Event, subject_of

logger = logging.getLogger(__name__)

SelectT = TypeVar("SelectT", bound=Select[Any])
PublishFn = Callable[[str, dict[str, Any], dict[str, str]], Awaitable[None]]


def add_event_tables(metadata: MetaData) -> MetaData:
    """Add the two tables every event-driven service needs to its metadata:
    `processed_events` (idempotent consumers) and `outbox` (events published after commit).

    Each service declares `class Base(DeclarativeBase): metadata = add_event_tables(
    MetaData(schema=SCHEMA))`, so its tables live in its own schema."""
    Table(
        "processed_events",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", Uuid, primary_key=True),
        Column("processed_at", DateTime(timezone=True), nullable=False),
    )
    Table(
        "outbox",
        metadata,
        Column("id", Uuid, primary_key=True),
        Column("subject", String(200), nullable=False),
        Column("payload", JSON, nullable=False),
        Column("headers", JSON, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )
    return metadata


# Postgres going away as a client sees it: refused or dropped connections, a server that
# shuts down or is still starting (asyncpg's own, raw or wrapped by SQLAlchemy).
_UNAVAILABLE = (
    OSError,  # refused, reset, or a Unix socket not there while it restarts
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.OperationalError,
)


def database_unavailable(exc: BaseException) -> bool:
    """True for a failure to reach Postgres (down, restarting, a connection it dropped), as
    opposed to a statement it refused: worth trying again once it is back."""
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return True
    cause = getattr(exc, "orig", None) or exc.__cause__
    return isinstance(exc, _UNAVAILABLE) or isinstance(cause, _UNAVAILABLE)


# Statements Postgres refused only because of another transaction at the same moment: it
# asks the client to run the transaction again (deadlock_detected, serialization_failure).
_CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})


def database_conflict(exc: BaseException) -> bool:
    """True for a transaction Postgres aborted to break a deadlock or a serialization
    conflict: it succeeds when run again, so it is no reason to fail a workflow."""
    orig = getattr(exc, "orig", None)
    for candidate in (orig, getattr(orig, "__cause__", None), exc.__cause__):
        if getattr(candidate, "sqlstate", None) in _CONFLICT_SQLSTATES:
            return True
    return False


def transient_failure(exc: BaseException) -> str | None:
    """Why a transaction that raised `exc` will succeed when simply run again (the event
    redelivered), or None when it failed for a reason of its own."""
    if database_unavailable(exc):
        return "the database is unavailable"
    if database_conflict(exc):
        return "a concurrent transaction conflicted"
    return None


def locked(stmt: SelectT) -> SelectT:
    """`stmt` locking the rows it reads until the transaction ends, FOR NO KEY UPDATE: no
    service changes a row's key, and FOR UPDATE would also block another transaction's
    foreign-key check on the row (inserting an epoch under a job, a node under a cluster),
    which then deadlocks with the holder. A statement that locks several rows orders them
    (by id), so two transactions never take them in opposite orders."""
    return stmt.with_for_update(key_share=True)


def create_engine(url: str) -> AsyncEngine:
    return create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


class UnitOfWork:
    """One transaction plus the events it raises.

    `async with UnitOfWork(...) as uow:` commits on success and rolls back on error; events
    passed to `emit` are stored in the outbox with the transaction and published after commit.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        metadata: MetaData,
        publish: PublishFn | None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._outbox = metadata.tables[f"{metadata.schema}.outbox"]
        self._processed = metadata.tables[f"{metadata.schema}.processed_events"]
        self._publish = publish
        self._pending: list[tuple[uuid.UUID, str, dict[str, Any], dict[str, str]]] = []
        self._after_commit: list[Callable[[], Awaitable[None]]] = []
        self.session: AsyncSession

    async def __aenter__(self) -> UnitOfWork:
        self.session = self._sessionmaker()
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None:
                await self.session.commit()
            else:
                await self.session.rollback()
                self._pending.clear()
                self._after_commit.clear()
        finally:
            await self.session.close()
        if exc_type is None:
            await self._run_after_commit()
            await self._publish_pending()

    def after_commit(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` once the unit has committed (never on rollback): side effects that
        are not the database, such as stopping processes, never run while a lock is held."""
        self._after_commit.append(action)

    async def _run_after_commit(self) -> None:
        actions, self._after_commit = self._after_commit, []
        for action in actions:
            try:
                await action()
            except Exception:
                logger.exception("an action after commit failed")

    async def emit(self, event: Event) -> None:
        headers: dict[str, str] = {}
        propagate.inject(headers)  # keep the trace even if the relay publishes it later
        headers["Nats-Msg-Id"] = str(event.event_id)  # JetStream drops duplicate publishes
        payload = event.model_dump(mode="json")
        row_id = uuid.uuid4()
        await self.session.execute(
            self._outbox.insert().values(
                id=row_id,
                subject=subject_of(event),
                payload=payload,
                headers=headers,
                created_at=datetime.now(UTC),
            )
        )
        self._pending.append((row_id, subject_of(event), payload, headers))

    async def first_time(self, consumer: str, event_id: uuid.UUID) -> bool:
        """Record that `consumer` handled `event_id`; False when it already had (a redelivery)."""
        result = await self.session.execute(
            pg_insert(self._processed)
            .values(consumer=consumer, event_id=event_id, processed_at=datetime.now(UTC))
            .on_conflict_do_nothing()
            .returning(self._processed.c.event_id)
        )
        return result.first() is not None

    async def _publish_pending(self) -> None:
        if self._publish is None or not self._pending:
            return
        published: list[uuid.UUID] = []
        try:
            for row_id, subject, payload, headers in self._pending:
                await self._publish(subject, payload, headers)
                published.append(row_id)
        except Exception:
            # The data is committed; the unsent events stay in the outbox for the relay.
            logger.exception("publishing after commit failed; the outbox relay will retry")
        self._pending.clear()
        if not published:
            return
        async with self._sessionmaker() as session, session.begin():
            await session.execute(delete(self._outbox).where(self._outbox.c.id.in_(published)))


async def relay_outbox(
    sessionmaker: async_sessionmaker[AsyncSession],
    metadata: MetaData,
    publish: PublishFn,
    older_than_s: float = 10.0,
) -> int:
    """Publish events whose commit landed but whose publish did not (a crash in between).
    Duplicates are harmless: consumers are idempotent and JetStream de-duplicates by id."""
    outbox = metadata.tables[f"{metadata.schema}.outbox"]
    async with sessionmaker() as session, session.begin():
        rows = (
            await session.execute(
                select(outbox)
                .where(outbox.c.created_at < datetime.now(UTC) - timedelta(seconds=older_than_s))
                .order_by(outbox.c.created_at)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for row in rows:
            await publish(row.subject, row.payload, row.headers)
        if rows:
            await session.execute(delete(outbox).where(outbox.c.id.in_([r.id for r in rows])))
    return len(rows)


async def advisory_lock(session: AsyncSession, key: str) -> None:
    """Serialize, until this transaction ends, every transaction that takes the same key:
    for a check and a write that must not interleave (a quota and what it counts)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})


@dataclass(frozen=True)
class SystemScope:
    """Every tenant's rows, asked for by name: the service's own duties (supervision,
    start-up recovery) and event handlers that take the tenant from the row they find and
    compare it with the event's."""


SYSTEM = SystemScope()
# What a repository is bound to: one tenant's id, or SYSTEM.
Scope = str | SystemScope


def in_scope(tenant_column: QueryableAttribute[str], scope: Scope) -> ColumnElement[bool]:
    """The WHERE clause that keeps a query inside `scope`."""
    if isinstance(check_scope(scope), SystemScope):
        return true()
    return tenant_column == scope


def check_scope(scope: Scope) -> Scope:
    """`scope` itself, once it is known not to be an empty tenant id."""
    if not isinstance(scope, SystemScope) and not scope:
        raise ValueError("a repository is bound to a tenant id or to SYSTEM, never to ''")
    return scope
