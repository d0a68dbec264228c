"""Request/reply with a node process on core NATS: `nodes.{node_id}.task`."""

from __future__ import annotations

import json
from typing import Any

from nats.errors import Error as NatsError
from opentelemetry import propagate

from shared.bus import NODE_TASK_SUBJECT
from shared.service_app import ServiceContext


class NodeUnreachable(Exception):
    """The node did not answer, or answered with something other than a task reply."""


async def send_task(
    context: ServiceContext, node_id: str, task_id: str, kind: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """Send a task and return the node's reply (`{"accepted": bool, ...}`)."""
    headers: dict[str, str] = {}
    propagate.inject(headers)  # the node continues this trace in the events it publishes
    message = json.dumps({"task_id": task_id, "kind": kind, "payload": payload}).encode()
    timeout = context.settings.task_request_timeout_s  # type: ignore[attr-defined]
    try:
        reply = await context.broker.connection.request(
            NODE_TASK_SUBJECT.format(node_id=node_id), message, timeout=timeout, headers=headers
        )
    except (NatsError, TimeoutError) as exc:
        raise NodeUnreachable(
            f"node {node_id} did not answer the {kind} task: {type(exc).__name__} {exc}".strip()
        ) from exc
    try:
        answer = json.loads(reply.data)
    except ValueError as exc:
        raise NodeUnreachable(f"node {node_id} sent a reply that is not JSON") from exc
    if not isinstance(answer, dict) or "accepted" not in answer:
        raise NodeUnreachable(f"node {node_id} sent a reply without 'accepted'")
    return answer
