"""The cluster service's duties besides starting clusters: note heartbeats, notice lost nodes
and clusters that never came up, recover from a previous service process that died, and fail
a workflow whose cluster is gone. Domain code: the background loops (`background.py`) and
the routes own the transactions."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.cluster.models import Cluster
from services.cluster.repository import ClusterRepository, WorkflowRepository
from services.cluster.service.adoption import ADOPT_TIMEOUT_S, owner_died_here
from services.cluster.service.deadlines import DeadlinePolicy, fail_overdue_phases
from services.cluster.service.nodes import expected_nodes, fail_cluster, stop_cluster
from services.cluster.service.replacement import replace_lost
from services.cluster.service.status import record_phase_failed
from services.cluster.state import ClusterContext, ClusterState, owner_id
from shared.contracts import NodeLost
from shared.db import SYSTEM, UnitOfWork
from shared.phases import fail_phase
from shared.settings import HEARTBEAT_MISSES, NexusSettings

logger = logging.getLogger(__name__)

WATCHDOG_INTERVAL_S = 2.0
# How late a heartbeat may reach the database (flushed once a second) and be looked at.
DATABASE_LAG_S = 1.0 + WATCHDOG_INTERVAL_S


def adoption_window_s(settings: NexusSettings) -> float:
    """How long after start-up a dead predecessor's nodes have to be heard and adopted."""
    return settings.loss_detection_s + ADOPT_TIMEOUT_S


def note_heartbeat(state: ClusterState, body: dict[str, object]) -> None:
    node_id = body.get("node_id")
    if isinstance(node_id, str) and node_id:
        # The time it arrived here, not the node's clock, which may be skewed.
        state.heartbeats[node_id] = datetime.now(UTC)
        state.last_heard[node_id] = time.monotonic()


@dataclass(frozen=True)
class Loss:
    """Why a node is declared lost."""

    reason: str
    cause: str = "silent"  # or "exited"
    exit_code: int | None = None
    silent_s: float | None = None


def losses_now(context: ClusterContext) -> dict[str, Loss]:
    """The nodes gone since the last look: processes of ours that exited (noticed at once,
    without a database query), and any node, ours or another host's, silent for
    three heartbeat intervals."""
    settings = context.settings
    losses = {
        node_id: Loss(_exit_reason(code), cause="exited", exit_code=code)
        for node_id, code in context.state.manager.exited().items()
    }
    silent_after = HEARTBEAT_MISSES * settings.heartbeat_interval_s
    # Heartbeats sent while this process was cut off from the broker were never heard:
    # silence counts only from when it could hear them again.
    heard_for = context.broker_link.heard_for()
    if heard_for <= silent_after:
        return losses
    for node_id, silent in context.state.silent_nodes(silent_after).items():
        silent = min(silent, heard_for)
        reason = f"it missed {HEARTBEAT_MISSES} heartbeats (silent for {silent:.1f} s)"
        losses.setdefault(node_id, Loss(reason, silent_s=round(silent, 3)))
    return losses


def _exit_reason(code: int | None) -> str:
    if code is None:  # a node adopted after a service restart: not our child
        return "its process exited"
    return f"its process exited with code {code}"


async def declare_lost(context: ClusterContext, uow: UnitOfWork, losses: dict[str, Loss]) -> None:
    """Mark the nodes lost and publish `nexus.node.lost` for each that was still live (one
    already stopped on purpose, or declared before, is no news)."""
    state = context.state
    for node_id in losses:
        state.last_heard.pop(node_id, None)
    repo = ClusterRepository(uow.session, SYSTEM)
    nodes = await repo.live_nodes(list(losses))
    if not nodes:
        return
    await repo.set_node_status([n.id for n in nodes], "lost")
    fenced = state.manager.fence([n.id for n in nodes if losses[n.id].cause == "silent"])
    if fenced:
        logger.warning("killed silent nodes %s, declared lost", ", ".join(fenced))
    found = {c: await repo.get(c) for c in {n.cluster_id for n in nodes}}
    clusters = {c: cluster for c, cluster in found.items() if cluster is not None}
    await replace_lost(context, uow, nodes, clusters)
    for node in nodes:
        loss = losses[node.id]
        cluster = clusters.get(node.cluster_id)
        if cluster is None:
            continue
        logger.warning("node %s of cluster %s lost: %s", node.id, cluster.id, loss.reason)
        state.metrics.lost.labels(role=node.role, cause=loss.cause).inc()
        await uow.emit(
            NodeLost(
                # A standalone cluster's events carry its id as their workflow id.
                workflow_id=cluster.workflow_id or cluster.id,
                tenant_id=cluster.tenant_id,
                cluster_id=cluster.id,
                node_id=node.id,
                role=node.role,  # type: ignore[arg-type]  # the column holds only NodeRole values
                rank=node.rank,
                reason=loss.reason,
                exit_code=loss.exit_code,
                silent_s=loss.silent_s,
            )
        )


async def record_heartbeats(uow: UnitOfWork, beats: dict[str, datetime]) -> None:
    repo = ClusterRepository(uow.session, SYSTEM)
    known = await repo.existing_node_ids(list(beats))
    await repo.record_heartbeats({k: v for k, v in beats.items() if k in known})


async def watch_once(context: ClusterContext, uow: UnitOfWork) -> None:
    """Mark lost the nodes not heard since this process started (their heartbeats in the
    database are old: a node of a predecessor that died with it); fail clusters that did not
    come up in time; fail phases past their deadline. (Exits and silences of nodes heard
    here are `losses_now`'s.)"""
    state, settings = context.state, context.settings
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
    # Heartbeats reach the database a flush interval late; a watchdog pass may be late too.
    silent_after = HEARTBEAT_MISSES * settings.heartbeat_interval_s + DATABASE_LAG_S
    heard_before = datetime.now(UTC) - timedelta(seconds=silent_after)
    stale = [n.id for n in await repo.stale_nodes(heard_before) if n.id not in state.last_heard]
    listening = context.broker_link.heard_for() > silent_after
    if stale and listening and now - state.started_at > adoption_window_s(settings):
        reason = f"it sent no heartbeat for {silent_after:.0f} s"
        await declare_lost(context, uow, {node_id: Loss(reason) for node_id in stale})
    for cluster_id in overdue:
        state.starting.pop(cluster_id, None)
        cluster = await repo.get(cluster_id, for_update=True)
        if cluster is not None and cluster.status == "starting":
            await fail_cluster(context, uow, cluster, await _why_not_ready(repo, cluster))
    await fail_overdue_phases(DeadlinePolicy.from_settings(settings), uow)


async def _why_not_ready(repo: ClusterRepository, cluster: Cluster) -> str:
    nodes = await repo.nodes_of(cluster.id)
    registered = sum(1 for n in nodes if n.status == "registered")
    expected = expected_nodes(cluster)
    if registered < expected:
        return f"only {registered} of {expected} nodes registered in time"
    return "the topology check did not finish in time"


async def recover_orphans(context: ClusterContext, uow: UnitOfWork) -> None:
    """Clusters whose owning service process (on this host) is gone and none of whose nodes
    was adopted (`adoption`) lost their nodes with it: mark them failed, and fail the
    workflows that were running on them."""
    host = owner_id().rsplit(":", 1)[0]
    for cluster in await ClusterRepository(uow.session, SYSTEM).active():
        if cluster.owner is None or not owner_died_here(cluster.owner, host):
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
