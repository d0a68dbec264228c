"""The node's event loop: register, heartbeat, serve tasks, and exit cleanly on SIGTERM or when
the service that started it died and no restarted one adopted the node in time."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, stop_after_delay, wait_exponential

from services.cluster.node.owner import Owner
from services.cluster.node.rendezvous import (
    ConnectPayload,
    connect,
    destroy_process_group_if_any,
    ensure_torch,
    host_rendezvous,
    prewarm_training_stack,
)
from services.cluster.node.task_context import (
    NodeTaskContext,
    RunningTask,
    TaskRequest,
    handler_available,
    load_handler,
    run_in_daemon_thread,
)
from shared.contracts import Event, NodeInfo, NodeRegistered, subject_of
from shared.subjects import (
    NODE_ADOPT_SUBJECT,
    NODE_HEARTBEAT_SUBJECT,
    NODE_TASK_SUBJECT,
    STREAM_NAME,
)

logger = logging.getLogger("nexus.node")

# How long a running task may take to notice `cancelled` on shutdown before the node leaves.
SHUTDOWN_GRACE_S = 10.0
# A publish is tried for this long (each try waiting this long for the ack), which covers a
# NATS restart; the task's thread waits PUBLISH_TIMEOUT_S, more than both together.
PUBLISH_RETRY_S = 20.0
PUBLISH_ATTEMPT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class NodeIdentity:
    cluster_id: uuid.UUID
    workflow_id: uuid.UUID
    tenant_id: str
    info: NodeInfo


class NodeRuntime:
    def __init__(
        self,
        identity: NodeIdentity,
        nats_url: str,
        artifacts_url: str,
        heartbeat_interval_s: float,
        orphan_grace_s: float,
    ) -> None:
        self.identity = identity
        self._heartbeat_interval_s = heartbeat_interval_s
        self._nats_url = nats_url
        self._artifacts_url = artifacts_url
        # The service that asked for this node; its parent may be the fork server instead.
        owner = os.environ.get("NEXUS_NODE_OWNER_PID", "")
        self._owner = Owner(int(owner) if owner.isdigit() else os.getppid(), orphan_grace_s)
        self._stopping = asyncio.Event()
        self._nc: Client
        self._js: JetStreamContext
        self._running: RunningTask | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._tracer = trace.get_tracer("nexus.node")

    @property
    def node_id(self) -> str:
        return self.identity.info.node_id

    def task_still_running(self) -> bool:
        return self._running is not None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        owner_watch = asyncio.create_task(self._watch_owner(), name="owner-watch")
        try:
            if not await self._connect():
                return 0 if self._stopping.is_set() else 1
            await self._nc.subscribe(
                NODE_TASK_SUBJECT.format(node_id=self.node_id), cb=self._on_task
            )
            await self._nc.subscribe(
                NODE_ADOPT_SUBJECT.format(node_id=self.node_id), cb=self._on_adopt
            )
            # torch's import holds the interpreter lock for long stretches (loading its
            # native libraries), which would stall heartbeats: import it before registering,
            # while no one counts this node's silence yet.
            await asyncio.to_thread(ensure_torch)
            if not await self._register():
                await self._nc.drain()
                return 1
            heartbeat = asyncio.create_task(self._heartbeat_forever(), name="heartbeat")
            # While the cluster waits for the other nodes and checks the topology, load what
            # a job needs, so the first one starts in milliseconds; a task that arrives
            # meanwhile waits on the import lock.
            threading.Thread(target=_prewarm, name="prewarm", daemon=True).start()
            await self._stopping.wait()
            return await self._shutdown(heartbeat)
        finally:
            owner_watch.cancel()

    async def _connect(self) -> bool:
        """Connect to NATS, retrying while it is unreachable, until told to stop."""
        connecting = asyncio.create_task(
            nats.connect(
                self._nats_url,
                name=self.node_id,
                max_reconnect_attempts=-1,
                # Back within moments of a broker restart: every moment away is a gap in the
                # heartbeats the cluster service hears.
                reconnect_time_wait=0.25,
                error_cb=self._on_nats_error,
            )
        )
        stopping = asyncio.create_task(self._stopping.wait())
        await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not connecting.done():
            connecting.cancel()
            logger.info("stopped before NATS at %s answered", self._nats_url)
            return False
        try:
            self._nc = connecting.result()
        except Exception as exc:
            logger.error("cannot reach NATS at %s: %s", self._nats_url, exc)
            return False
        self._js = self._nc.jetstream()
        return True

    async def _on_nats_error(self, exc: Exception) -> None:
        # One line per failure; the client's default logs a full traceback every second.
        logger.warning("NATS: %s: %s", type(exc).__name__, exc)

    async def _watch_owner(self) -> None:
        """Leave when the service we follow has been gone for longer than the grace."""
        while not self._stopping.is_set():
            if self._owner.given_up():
                self._stopping.set()
                return
            await asyncio.sleep(self._heartbeat_interval_s)

    async def _on_adopt(self, msg: Msg) -> None:
        """A restarted cluster service takes over this node: follow its process from now."""
        try:
            owner_pid = int(json.loads(msg.data)["owner_pid"])
        except (ValueError, KeyError, TypeError):
            await _reply(msg, {"adopted": False, "error": 'expected {"owner_pid": int}'})
            return
        if not self._owner.adopt(owner_pid):
            await _reply(msg, {"adopted": False, "error": f"no process {owner_pid} here"})
            return
        busy = self._running.task_id if self._running else None
        await _reply(msg, {"adopted": True, "pid": self.identity.info.pid, "busy": busy})

    # -- registration and liveness --------------------------------------------------------

    async def _register(self) -> bool:
        event = NodeRegistered(
            workflow_id=self.identity.workflow_id,
            tenant_id=self.identity.tenant_id,
            cluster_id=self.identity.cluster_id,
            node=self.identity.info,
        )
        headers = {"Nats-Msg-Id": str(event.event_id)}
        # The cluster passes the workflow's trace in the environment (see process_manager).
        for variable in ("TRACEPARENT", "TRACESTATE"):
            if variable in os.environ:
                headers[variable.lower()] = os.environ[variable]
        try:  # the stream may not exist yet (the service creates it): `_publish` retries
            await self._publish(event, headers)
        except Exception as exc:
            logger.error("could not register within %.0f s: %s; exiting", PUBLISH_RETRY_S, exc)
            return False
        logger.info("registered %s (pid %d)", self.node_id, self.identity.info.pid)
        return True

    async def _heartbeat_forever(self) -> None:
        subject = NODE_HEARTBEAT_SUBJECT.format(
            cluster_id=self.identity.cluster_id, node_id=self.node_id
        )
        while not self._stopping.is_set():
            beat = {
                "node_id": self.node_id,
                "cluster_id": str(self.identity.cluster_id),
                "pid": self.identity.info.pid,
                "ts": time.time(),
                "busy": self._running.task_id if self._running else None,
            }
            try:
                await self._nc.publish(subject, json.dumps(beat).encode())
            except Exception as exc:  # reconnecting; the next tick tries again
                logger.warning("heartbeat not sent: %s", exc)
            try:
                await asyncio.wait_for(self._stopping.wait(), self._heartbeat_interval_s)
            except TimeoutError:
                pass

    async def _publish(self, event: Event, headers: dict[str, str]) -> None:
        """Publish to the stream, trying again while the broker restarts or reconnects: the
        message id makes a repeat that did land count once."""
        retrying = AsyncRetrying(
            stop=stop_after_delay(PUBLISH_RETRY_S),
            wait=wait_exponential(multiplier=0.1, max=2),
            before_sleep=_log_publish_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                await self._js.publish(
                    subject_of(event),
                    event.model_dump_json().encode(),
                    stream=STREAM_NAME,
                    headers=headers,
                    timeout=PUBLISH_ATTEMPT_TIMEOUT_S,
                )

    # -- tasks ----------------------------------------------------------------------------

    async def _on_task(self, msg: Msg) -> None:
        # One coroutine per request, so a `ping` or `cancel` is answered while a task runs.
        handler = asyncio.create_task(self._handle_task(msg))
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)

    async def _handle_task(self, msg: Msg) -> None:
        try:
            request = TaskRequest.model_validate_json(msg.data)
        except ValidationError as exc:
            await _reply(msg, {"accepted": False, "error": f"bad task request: {exc}"})
            return
        if request.kind == "ping":
            busy = self._running.task_id if self._running else None
            await _reply(
                msg, {"accepted": True, "node": self.identity.info.model_dump(), "busy": busy}
            )

        elif request.kind == "cancel":
            await _reply(msg, self._cancel(request.payload.get("task_id")))
        elif self._stopping.is_set():
            await _reply(msg, {"accepted": False, "error": "node is shutting down"})
        elif self._running is not None:
            error = f"busy with task {self._running.task_id} ({self._running.kind})"
            await _reply(msg, {"accepted": False, "error": error})
        elif request.kind == "connect":
            await self._run_connect(msg, request)
        elif request.kind == "rendezvous":
            await self._run_short(msg, request, host_rendezvous, self.identity.info.host)
        else:
            await self._run_handler(msg, request)

    def _cancel(self, task_id: Any) -> dict[str, Any]:
        running = self._running
        if running is None or running.context is None:
            return {"accepted": False, "error": "no cancellable task is running"}
        if task_id is not None and task_id != running.task_id:
            return {"accepted": False, "error": f"task {task_id} is not running here"}
        running.context.cancelled.set()
        return {"accepted": True, "cancelled": running.task_id}

    async def _run_connect(self, msg: Msg, request: TaskRequest) -> None:
        try:
            payload = ConnectPayload.model_validate(request.payload)
        except ValidationError as exc:
            await _reply(msg, {"accepted": False, "error": f"bad connect payload: {exc}"})
            return
        await self._run_short(msg, request, connect, payload)

    async def _run_short(
        self, msg: Msg, request: TaskRequest, fn: Callable[[Any], dict[str, Any]], arg: Any
    ) -> None:
        """A task short enough for its reply to carry the outcome instead of an event."""
        running = RunningTask(request.task_id, request.kind, None, asyncio.Event())
        self._running = running
        try:
            result = await run_in_daemon_thread(fn, arg, name=f"task-{request.task_id}")
            await _reply(msg, {"accepted": True, "node_id": self.node_id, **result})
        except Exception as exc:
            logger.warning("%s failed: %s", request.kind, exc)
            error = f"{type(exc).__name__}: {exc}"
            await _reply(
                msg, {"accepted": True, "ok": False, "node_id": self.node_id, "error": error}
            )
        finally:
            self._running = None
            running.done.set()

    async def _run_handler(self, msg: Msg, request: TaskRequest) -> None:
        problem = handler_available(request.kind)
        if problem is not None:
            await _reply(msg, {"accepted": False, "error": problem})
            return
        parent = propagate.extract(dict(msg.headers or {}))
        span = self._tracer.start_span(f"node task {request.kind}", context=parent)
        context = NodeTaskContext(
            node=self.identity.info,
            cluster_id=str(self.identity.cluster_id),
            artifacts_url=self._artifacts_url,
            task_id=request.task_id,
            loop=asyncio.get_running_loop(),
            publish_async=self._publish,
            trace_context=trace.set_span_in_context(span, parent),
        )
        running = RunningTask(request.task_id, request.kind, context, asyncio.Event())
        self._running = running
        await _reply(msg, {"accepted": True, "task_id": request.task_id, "node_id": self.node_id})
        logger.info("task %s (%s) started", request.task_id, request.kind)
        overdue = None
        if request.deadline_s is not None:
            overdue = asyncio.get_running_loop().call_later(
                request.deadline_s, _past_deadline, request, context
            )
        try:
            await run_in_daemon_thread(
                _run_handler_sync,
                request.kind,
                request.payload,
                context,
                name=f"task-{request.task_id}",
            )
            logger.info("task %s (%s) finished", request.task_id, request.kind)
        except Exception as exc:
            # Handlers report their own failures as events; this is a bug in one.
            logger.exception("task %s (%s) raised", request.task_id, request.kind)
            span.record_exception(exc)
        finally:
            if overdue is not None:
                overdue.cancel()
            span.end()
            self._running = None
            running.done.set()

    # -- shutdown -------------------------------------------------------------------------

    async def _shutdown(self, heartbeat: asyncio.Task[None]) -> int:
        logger.info("node %s stopping", self.node_id)
        stopping_since = time.monotonic()
        running = self._running
        if running is not None:
            if running.context is not None:
                running.context.cancelled.set()
            try:
                await asyncio.wait_for(running.done.wait(), SHUTDOWN_GRACE_S)
            except TimeoutError:
                grace = SHUTDOWN_GRACE_S
                logger.warning("task %s did not stop within %.0f s", running.task_id, grace)
        if self._running is None:
            # A task thread still inside a collective would hang here; skip it then.
            await asyncio.to_thread(destroy_process_group_if_any)
        heartbeat.cancel()
        try:
            await asyncio.wait_for(self._nc.drain(), 5)
        except Exception as exc:
            logger.warning("NATS drain failed: %s", exc)
        logger.info("node %s stopped in %.2f s", self.node_id, time.monotonic() - stopping_since)
        return 0


def _past_deadline(request: TaskRequest, context: NodeTaskContext) -> None:
    reason = f"the task ran past its deadline of {request.deadline_s:g} s on the node"
    logger.warning("task %s (%s): %s; stopping it", request.task_id, request.kind, reason)
    context.cancel_reason = reason
    context.cancelled.set()


def _log_publish_retry(state: RetryCallState) -> None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    logger.warning("publish failed (%s: %s); trying again", type(error).__name__, error)


def _prewarm() -> None:
    try:
        prewarm_training_stack()
    except Exception:  # the task that needs them will import them, and report any error
        logger.warning("could not pre-load the training stack", exc_info=True)


def _run_handler_sync(kind: str, payload: dict[str, Any], context: NodeTaskContext) -> None:
    # The task's span is current in its thread, so the handler's steps are its children.
    token = otel_context.attach(context.trace_context)
    try:
        ensure_torch()  # every task handler trains or measures a model; load torch once
        load_handler(kind)(payload, context)
    finally:
        otel_context.detach(token)


async def _reply(msg: Msg, body: dict[str, Any]) -> None:
    if msg.reply:
        await msg.respond(json.dumps(body, default=str).encode())
