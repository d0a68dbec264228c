"""Request/reply with a node process on core NATS: `nodes.{node_id}.task`."""

from __future__ import annotations

from typing import Any

from shared.node_tasks import NodeUnreachable, request_node_task
from shared.service_app import ServiceContext

__all__ = ["NodeUnreachable", "send_task"]


async def send_task(
    context: ServiceContext, node_id: str, task_id: str, kind: str, payload: dict[str, Any]
) -> dict[str, Any]:
    """Send a task and return the node's reply (`{"accepted": bool, ...}`)."""
    timeout = context.settings.task_request_timeout_s  # type: ignore[attr-defined]
    return await request_node_task(
        context.broker.connection, node_id, task_id, kind, payload, timeout
    )
