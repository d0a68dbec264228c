"""The contract between a node process and the tasks it runs.

A node (a process the cluster service starts) receives `{"task_id", "kind", "payload"}` on
`nodes.{node_id}.task`, answers `{"accepted": true}` at once, and runs the task's handler in
a worker thread so heartbeats keep flowing. Handlers belong to the service that owns the
work (`services.trainer.node_task`, `services.validator.node_task`) and report their outcome
by publishing events through the context.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from nats.aio.client import Client
from nats.errors import Error as NatsError
from opentelemetry import propagate

from shared.contracts import Event, NodeInfo
from shared.subjects import NODE_TASK_SUBJECT

if TYPE_CHECKING:  # the node process imports this module without FastAPI or the broker
    from shared.service_app import AnyContext

# kind -> "module:function" run as handler(payload, context); imported lazily by the node so
# torch is loaded once per node process and never in a web process.
TASK_HANDLERS: dict[str, str] = {
    "train": "services.trainer.node_task:run_training",
    "validate": "services.validator.node_task:run_validation",
}


class TaskContext(Protocol):
    node: NodeInfo
    cluster_id: str
    artifacts_url: str
    cancelled: threading.Event
    # Why `cancelled` was set by the node itself (the task's deadline), else None.
    cancel_reason: str | None

    def publish(self, event: Event) -> None:
        """Publish to JetStream from the task's thread; blocks until the server acks it and
        every event `publish_soon` handed over before it."""

    def publish_soon(self, event: Event) -> None:
        """Hand an event (progress) to the node's loop without waiting for its ack, so the
        task does not stall on the broker; blocks only when too many are still in flight."""


TaskHandler = Callable[[dict[str, Any], TaskContext], None]


class TaskNotStarted(Exception):
    """A node task did not start: the node did not answer, or answered that it will not."""


class NodeUnreachable(TaskNotStarted):
    """The node did not answer a task request, or answered with something else than a reply."""


class TaskRefused(TaskNotStarted):
    """The node answered and refused the task (busy, shutting down, a bad payload)."""


async def request_node_task(
    nc: Client,
    node_id: str,
    task_id: str,
    kind: str,
    payload: dict[str, Any],
    timeout: float,
    deadline_s: float | None = None,
) -> dict[str, Any]:
    """Send a task on `nodes.{node_id}.task` and return the node's reply
    (`{"accepted": bool, ...}`). The trace context travels in the headers, so the node
    continues this trace in the events it publishes."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    request: dict[str, Any] = {"task_id": task_id, "kind": kind, "payload": payload}
    if deadline_s is not None:
        request["deadline_s"] = deadline_s
    body = json.dumps(request).encode()
    try:
        reply = await nc.request(
            NODE_TASK_SUBJECT.format(node_id=node_id), body, timeout=timeout, headers=headers
        )
    except (NatsError, TimeoutError) as exc:
        raise NodeUnreachable(
            f"node {node_id} did not answer the task: {type(exc).__name__} {exc}".strip()
        ) from exc
    try:
        answer = json.loads(reply.data)
    except ValueError as exc:
        raise NodeUnreachable(f"node {node_id} sent a reply that is not JSON") from exc
    if not isinstance(answer, dict) or "accepted" not in answer:
        raise NodeUnreachable(f"node {node_id} sent a reply without 'accepted'")
    return answer


async def send_node_task(
    context: AnyContext,
    node_id: str,
    task_id: str,
    kind: str,
    payload: dict[str, Any],
    deadline_s: float | None = None,
) -> dict[str, Any]:
    """Hand a task to a node and return its acceptance; raises `TaskNotStarted` (the node did
    not answer within `node_task_accept_timeout_s`, or refused) otherwise. The node stops a
    task still running `deadline_s` after it started."""
    answer = await request_node_task(
        context.broker.connection,
        node_id,
        task_id,
        kind,
        payload,
        context.settings.node_task_accept_timeout_s,
        deadline_s,
    )
    if answer.get("accepted") is not True:
        reason = answer.get("error")
        raise TaskRefused(f"node {node_id} refused the task" + (f": {reason}" if reason else ""))
    return answer
