"""Finding a cluster's validator node and handing it a `validate` task over core NATS."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from shared.events import NodeInfo
from shared.node_tasks import NodeUnreachable, request_node_task
from shared.security import internal_headers
from shared.service_app import ServiceContext

logger = logging.getLogger(__name__)

# Nodes the cluster reports in these states will not answer a task; any other state is
# tried, and the task request itself is the real liveness check.
_GONE_STATUSES = frozenset({"stopped", "failed", "lost", "released", "terminated"})


class NodeUnavailable(Exception):
    """No validator node could take the task; the message says why."""


class ClusterUnreachable(NodeUnavailable):
    """The cluster service could not say which nodes exist (worth retrying later)."""


@dataclass(frozen=True)
class ValidatorNode:
    node_id: str
    rank: int


def pick_validator(nodes: list[ValidatorNode]) -> ValidatorNode | None:
    return min(nodes, key=lambda n: (n.rank, n.node_id), default=None)


def validators_from_event(nodes: list[NodeInfo]) -> list[ValidatorNode]:
    return [ValidatorNode(n.node_id, n.rank) for n in nodes if n.role == "validator"]


async def validators_from_cluster(
    context: ServiceContext, tenant_id: str, cluster_id: uuid.UUID
) -> list[ValidatorNode]:
    """The cluster's live validator nodes, as the cluster service reports them now."""
    url = f"{context.settings.cluster_url.rstrip('/')}/clusters/{cluster_id}"
    headers = internal_headers(context.settings.internal_token_value(), tenant_id)
    try:
        response = await context.http.get(url, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise ClusterUnreachable(f"cluster service unreachable at {url}: {exc!r}") from exc
    if response.status_code == 404:
        raise NodeUnavailable(f"cluster {cluster_id} not found")
    if response.status_code != 200:
        raise ClusterUnreachable(f"cluster service answered {response.status_code} for {url}")
    nodes: list[dict[str, Any]] = response.json().get("nodes", [])
    return [
        ValidatorNode(str(n["id"]), int(n.get("rank", 0)))
        for n in nodes
        if n.get("role") == "validator" and n.get("status") not in _GONE_STATUSES
    ]


async def find_validator(
    context: ServiceContext,
    tenant_id: str,
    cluster_id: uuid.UUID | None,
    hint: list[NodeInfo] | None = None,
) -> ValidatorNode:
    candidates = validators_from_event(hint or [])
    if not candidates:
        if cluster_id is None:
            raise NodeUnavailable("the validation names no cluster to run on")
        candidates = await validators_from_cluster(context, tenant_id, cluster_id)
    node = pick_validator(candidates)
    if node is None:
        raise NodeUnavailable(f"cluster {cluster_id} has no running validator node")
    return node


async def send_task(
    context: ServiceContext,
    node: ValidatorNode,
    task_id: uuid.UUID,
    payload: dict[str, Any],
    timeout: float,
) -> None:
    """Request/reply on `nodes.{node_id}.task`; raises NodeUnavailable unless accepted."""
    try:
        answer = await request_node_task(
            context.broker.connection, node.node_id, str(task_id), "validate", payload, timeout
        )
    except NodeUnreachable as exc:
        raise NodeUnavailable(f"validator {exc}") from exc
    if answer.get("accepted") is not True:
        reason = answer.get("error")
        raise NodeUnavailable(
            f"validator node {node.node_id} refused the task" + (f": {reason}" if reason else "")
        )
    logger.info("validation %s accepted by node %s", task_id, node.node_id)
