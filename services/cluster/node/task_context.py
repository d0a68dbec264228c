"""What a task handler running in a node's worker thread sees: `shared.node_tasks.TaskContext`."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import importlib
import importlib.util
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import propagate
from opentelemetry.context import Context
from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import Event, NodeInfo
from shared.node_tasks import TASK_HANDLERS, TaskHandler

logger = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0
# Events `publish_soon` may leave unacknowledged before it waits for the oldest.
MAX_IN_FLIGHT = 64
T = TypeVar("T")

PublishCoroutine = Callable[[Event, dict[str, str]], Coroutine[Any, Any, None]]


class TaskRequest(BaseModel):
    """What arrives on `nodes.{node_id}.task`."""

    model_config = ConfigDict(extra="ignore")

    task_id: str = Field(min_length=1, max_length=200)
    kind: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)
    # The node stops the task itself this long after it started, whoever else is around.
    deadline_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)


@dataclass
class NodeTaskContext:
    node: NodeInfo
    cluster_id: str
    artifacts_url: str
    task_id: str
    loop: asyncio.AbstractEventLoop
    publish_async: PublishCoroutine
    # The trace the task request arrived in; events the task publishes continue it.
    trace_context: Context
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Why `cancelled` was set, when not by a `cancel` request (its deadline passed).
    cancel_reason: str | None = None
    _in_flight: collections.deque[concurrent.futures.Future[None]] = field(
        default_factory=collections.deque
    )

    def publish(self, event: Event) -> None:
        """Publish to JetStream from the task's thread; blocks until the server acks it and
        every event handed to `publish_soon` before it (so an outcome never overtakes the
        progress it follows)."""
        future = self._schedule(event)
        while self._in_flight:
            self._settle_oldest()
        future.result(timeout=PUBLISH_TIMEOUT_S)

    def publish_soon(self, event: Event) -> None:
        """Publish without waiting for the ack: the loop sends events in the order given."""
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            self._settle_oldest()
        self._in_flight.append(self._schedule(event))

    def _settle_oldest(self) -> None:
        try:
            self._in_flight.popleft().result(timeout=PUBLISH_TIMEOUT_S)
        except Exception as exc:  # a lost progress event must not fail the task
            logger.warning("a progress event was not published: %s", exc)

    def _schedule(self, event: Event) -> concurrent.futures.Future[None]:
        headers = {"Nats-Msg-Id": str(event.event_id)}
        propagate.inject(headers, context=self.trace_context)
        return asyncio.run_coroutine_threadsafe(self.publish_async(event, headers), self.loop)


@dataclass
class RunningTask:
    task_id: str
    kind: str
    context: NodeTaskContext | None  # None for the short tasks, which cannot be cancelled
    done: asyncio.Event


def handler_available(kind: str) -> str | None:
    """None when `kind` names an importable handler, else why not (checked without importing,
    so the node can answer at once and load torch later, in the task's thread)."""
    target = TASK_HANDLERS.get(kind)
    if target is None:
        known = ", ".join(sorted({*TASK_HANDLERS, "ping", "connect", "rendezvous", "cancel"}))
        return f"unknown task kind {kind!r}; this node runs: {known}"
    module = target.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        found = None
    return None if found is not None else f"handler module {module!r} is not installed"


def load_handler(kind: str) -> TaskHandler:
    module_name, _, function = TASK_HANDLERS[kind].partition(":")
    handler: TaskHandler = getattr(importlib.import_module(module_name), function)
    return handler


def run_in_daemon_thread(fn: Callable[..., T], *args: Any, name: str) -> asyncio.Future[T]:
    """Run blocking work off the event loop in a daemon thread, so a task stuck in native code
    (a gloo collective) cannot keep the process alive at exit the way executor threads do."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def deliver(outcome: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: the node is exiting
            loop.call_soon_threadsafe(settle, outcome)

    def target() -> None:
        try:
            value = fn(*args)
        except BaseException as exc:  # handed to the awaiting coroutine
            error = exc
            deliver(lambda: future.set_exception(error))
        else:
            deliver(lambda: future.set_result(value))

    threading.Thread(target=target, name=name, daemon=True).start()
    return future
