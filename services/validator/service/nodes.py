"""Finding the node to validate on, as the cluster service reports its nodes: the cluster's
validator node, or, when it is gone, any other live node (every node runs the `validate`
task, and workers are idle once training is done)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from shared.security import internal_headers
from shared.service_app import AnyContext

logger = logging.getLogger(__name__)

# How long a validation waits for the cluster service to answer (it may be restarting: its
# nodes keep running meanwhile) before it gives up on finding a node.
CLUSTER_RETRY_S = 30.0

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
    role: str = "validator"


def pick_validator(nodes: list[ValidatorNode]) -> ValidatorNode | None:
    """A validator node first, then a worker, then a parameter server; the lowest rank."""
    order = {"validator": 0, "worker": 1, "parameter_server": 2}
    return min(nodes, key=lambda n: (order.get(n.role, 3), n.rank, n.node_id), default=None)


async def validators_from_cluster(
    context: AnyContext, tenant_id: str, cluster_id: uuid.UUID, patience_s: float
) -> list[ValidatorNode]:
    """The cluster's live nodes, as the cluster service reports them now; asked again with
    a growing pause for up to `patience_s` while that service does not answer."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(ClusterUnreachable),
        stop=stop_after_delay(patience_s),
        wait=wait_exponential(multiplier=0.25, max=4),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await _cluster_nodes(context, tenant_id, cluster_id)
    raise AssertionError("unreachable: tenacity reraises the last failure")


async def _cluster_nodes(
    context: AnyContext, tenant_id: str, cluster_id: uuid.UUID
) -> list[ValidatorNode]:
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
        ValidatorNode(str(n["id"]), int(n.get("rank", 0)), str(n.get("role")))
        for n in nodes
        if n.get("status") not in _GONE_STATUSES
    ]


async def find_validator(
    context: AnyContext,
    tenant_id: str,
    cluster_id: uuid.UUID | None,
    exclude: frozenset[str] = frozenset(),
    patience_s: float = CLUSTER_RETRY_S,
) -> ValidatorNode:
    """The node to validate on; never one of `exclude` (a node just lost). A caller that
    must answer at once (a route) passes `patience_s=0`."""
    if cluster_id is None:
        raise NodeUnavailable("the validation names no cluster to run on")
    live = await validators_from_cluster(context, tenant_id, cluster_id, patience_s)
    node = pick_validator([n for n in live if n.node_id not in exclude])
    if node is None:
        raise NodeUnavailable(f"cluster {cluster_id} has no running node to validate on")
    return node
