"""Wakes a workflow's event streams the moment Postgres says the workflow changed.

Every insert or update of a workflow or one of its phases sends a NOTIFY on
`cluster_workflow_changed` with the workflow's id (migration 0002), whichever cluster replica
made it. Each cluster process keeps one connection LISTENing and sets the events of the
streams that follow that workflow. While the connection is down the streams fall back to
reading every `FALLBACK_POLL_S`, and it is opened again after `RECONNECT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

CHANNEL = "cluster_workflow_changed"
FALLBACK_POLL_S = 1.0
RECONNECT_S = 1.0
# How often the listening connection is checked: a connection Postgres dropped says nothing.
LIVENESS_CHECK_S = 10.0


class WorkflowChanges:
    def __init__(self) -> None:
        self._streams: dict[str, set[asyncio.Event]] = {}
        self.listening = False

    @contextlib.contextmanager
    def follow(self, workflow_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set whenever the workflow changes (or the listener comes and goes, when
        a stream should read again). Clear it before each read, so no change is missed."""
        key = str(workflow_id)
        changed = asyncio.Event()
        self._streams.setdefault(key, set()).add(changed)
        try:
            yield changed
        finally:
            streams = self._streams.get(key, set())
            streams.discard(changed)
            if not streams:
                self._streams.pop(key, None)

    def wait_s(self, keepalive_s: float) -> float:
        """How long a stream may wait for a change before reading anyway."""
        return keepalive_s if self.listening else FALLBACK_POLL_S

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for changed in self._streams.get(payload, ()):
            changed.set()

    def _wake_all(self) -> None:
        for streams in self._streams.values():
            for changed in streams:
                changed.set()

    async def listen_forever(self, engine: AsyncEngine) -> None:
        while True:
            try:
                await self._listen(engine)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("workflow change listener lost its connection: %s", exc)
            await asyncio.sleep(RECONNECT_S)

    async def _listen(self, engine: AsyncEngine) -> None:
        # Its own connection, not one of the pool's: the pool's begin transactions, and a
        # session inside a transaction is told of no notification until it ends.
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        connection = await asyncpg.connect(*args, **kwargs)
        try:
            await connection.add_listener(CHANNEL, self._notified)
            self.listening = True
            self._wake_all()  # streams on the slow poll read once more, then wait
            while True:
                await asyncio.sleep(LIVENESS_CHECK_S)
                await connection.execute("SELECT 1")
        finally:
            self.listening = False
            self._wake_all()
            connection.terminate()
