"""The cluster service's duties besides starting clusters: note heartbeats, notice lost nodes
and clusters that never came up, recover from a previous service process that died, and fail
a workflow whose cluster is gone. Domain code: the background loops (`background.py`) and
the routes own the transactions."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import psutil

from services.cluster.models import Cluster
from services.cluster.repository import ClusterRepository, WorkflowRepository
from services.cluster.service.nodes import expected_nodes, fail_cluster, stop_cluster
from services.cluster.service.status import record_phase_failed
from services.cluster.state import ClusterContext, ClusterState, owner_id
from shared.db import SYSTEM, UnitOfWork
from shared.phases import fail_phase

logger = logging.getLogger(__name__)

WATCHDOG_INTERVAL_S = 2.0


def note_heartbeat(state: ClusterState, body: dict[str, object]) -> None:
    node_id = body.get("node_id")
    if isinstance(node_id, str) and node_id:
        # The time it arrived here, not the node's clock, which may be skewed.
        state.heartbeats[node_id] = datetime.now(UTC)


async def record_heartbeats(uow: UnitOfWork, beats: dict[str, datetime]) -> None:
    repo = ClusterRepository(uow.session, SYSTEM)
    known = await repo.existing_node_ids(list(beats))
    await repo.record_heartbeats({k: v for k, v in beats.items() if k in known})


async def watch_once(context: ClusterContext, uow: UnitOfWork) -> None:
    """Mark exited and silent nodes lost; fail clusters that did not come up in time."""
    state, settings = context.state, context.settings
    exited = state.manager.exited()
    now = time.monotonic()
    registration_s = settings.node_registration_timeout_s
    # A topology check in flight gets its own budget before the cluster counts as stuck.
    verification_s = registration_s + settings.topology_timeout_s + WATCHDOG_INTERVAL_S
    overdue = [
        cluster_id
        for cluster_id, started in state.starting.items()
        if now - started > (verification_s if cluster_id in state.verifying else registration_s)
    ]
    repo = ClusterRepository(uow.session, SYSTEM)
    if exited:
        logger.warning("node processes exited: %s", exited)
        await repo.set_node_status(list(exited), "lost")
    heard_before = datetime.now(UTC) - timedelta(seconds=settings.heartbeat_timeout_s)
    stale = await repo.stale_nodes(heard_before)
    if stale:
        logger.warning("nodes stopped heartbeating: %s", [n.id for n in stale])
        await repo.set_node_status([n.id for n in stale], "lost")
    for cluster_id in overdue:
        state.starting.pop(cluster_id, None)
        cluster = await repo.get(cluster_id, for_update=True)
        if cluster is not None and cluster.status == "starting":
            await fail_cluster(context, uow, cluster, await _why_not_ready(repo, cluster))


async def _why_not_ready(repo: ClusterRepository, cluster: Cluster) -> str:
    nodes = await repo.nodes_of(cluster.id)
    registered = sum(1 for n in nodes if n.status == "registered")
    expected = expected_nodes(cluster)
    if registered < expected:
        return f"only {registered} of {expected} nodes registered in time"
    return "the topology check did not finish in time"


async def recover_orphans(context: ClusterContext, uow: UnitOfWork) -> None:
    """Clusters whose owning service process (on this host) is gone lost their nodes with
    it: mark them failed, and fail the workflows that were running on them."""
    host = owner_id().rsplit(":", 1)[0]
    for cluster in await ClusterRepository(uow.session, SYSTEM).active():
        if cluster.owner is None:
            continue
        owner_host, _, owner_pid = cluster.owner.rpartition(":")
        if owner_host != host or psutil.pid_exists(int(owner_pid)):
            continue
        await abandon_cluster(
            context, uow, cluster, "the cluster service that ran its nodes exited"
        )


async def abandon_owned(context: ClusterContext, uow: UnitOfWork) -> None:
    """On shutdown: the clusters this process runs cannot go on without it."""
    repo = ClusterRepository(uow.session, SYSTEM)
    for cluster_id in context.state.manager.clusters():
        cluster = await repo.get(cluster_id, for_update=True)
        if cluster is not None:
            await abandon_cluster(context, uow, cluster, "the cluster service stopped")


async def abandon_cluster(
    context: ClusterContext,
    uow: UnitOfWork,
    cluster: Cluster,
    reason: str,
    *,
    status: str = "failed",
) -> None:
    """Stop a cluster's nodes and fail the workflow running on it, in its current phase: as
    the keeper of the workflow's record, the cluster service reports that its nodes are gone,
    whichever phase was using them."""
    await stop_cluster(context, uow, cluster, status=status, error=reason)
    if cluster.workflow_id is None:
        return
    workflows = WorkflowRepository(uow.session, cluster.tenant_id)
    workflow = await workflows.get(cluster.workflow_id, for_update=True)
    if workflow is None:
        return
    phase = workflow.current_phase
    if record_phase_failed(workflow, await workflows.phases_of(workflow.id), phase, reason):
        await fail_phase(uow, phase, workflow.id, workflow.tenant_id, reason)
