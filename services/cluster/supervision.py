"""Background duties of the cluster service: write heartbeats, notice lost nodes and clusters
that never came up, recover from a previous service process that died, and release every
node on shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import psutil

from services.cluster.cluster_repository import ClusterRepository
from services.cluster.cluster_service import expected_nodes, fail_cluster, stop_cluster
from services.cluster.models import Cluster
from services.cluster.runtime import ClusterRuntime, owner_id, runtime_of
from services.cluster.workflow_repository import WorkflowRepository
from services.cluster.workflow_status import fail_phase
from shared.db import UnitOfWork
from shared.events import PhaseFailed
from shared.service_app import ServiceContext

logger = logging.getLogger(__name__)

HEARTBEAT_FLUSH_INTERVAL_S = 1.0
WATCHDOG_INTERVAL_S = 2.0


def note_heartbeat(runtime: ClusterRuntime, body: dict[str, object]) -> None:
    node_id = body.get("node_id")
    if isinstance(node_id, str) and node_id:
        # The time it arrived here, not the node's clock, which may be skewed.
        runtime.heartbeats[node_id] = datetime.now(UTC)


async def flush_heartbeats_forever(context: ServiceContext) -> None:
    runtime = runtime_of(context)
    while True:
        await asyncio.sleep(HEARTBEAT_FLUSH_INTERVAL_S)
        beats, runtime.heartbeats = runtime.heartbeats, {}
        if not beats:
            continue
        try:
            async with context.unit_of_work() as uow:
                repo = ClusterRepository(uow.session)
                known = await repo.existing_node_ids(list(beats))
                await repo.record_heartbeats({k: v for k, v in beats.items() if k in known})
        except Exception:
            logger.exception("could not record %d heartbeats", len(beats))


async def watch_forever(context: ServiceContext) -> None:
    while True:
        await asyncio.sleep(WATCHDOG_INTERVAL_S)
        try:
            await watch_once(context)
        except Exception:
            logger.exception("cluster watchdog pass failed")


async def watch_once(context: ServiceContext) -> None:
    runtime = runtime_of(context)
    settings = runtime.settings
    exited = runtime.manager.exited()
    now = time.monotonic()
    registration_s = settings.node_registration_timeout_s
    # A topology check in flight gets its own budget before the cluster counts as stuck.
    verification_s = registration_s + settings.topology_timeout_s + WATCHDOG_INTERVAL_S
    overdue = [
        cluster_id
        for cluster_id, started in runtime.starting.items()
        if now - started > (verification_s if cluster_id in runtime.verifying else registration_s)
    ]
    async with context.unit_of_work() as uow:
        repo = ClusterRepository(uow.session)
        if exited:
            logger.warning("node processes exited: %s", exited)
            await repo.set_node_status(list(exited), "lost")
        heard_before = datetime.now(UTC) - timedelta(seconds=settings.heartbeat_timeout_s)
        stale = await repo.stale_nodes(heard_before)
        if stale:
            logger.warning("nodes stopped heartbeating: %s", [n.id for n in stale])
            await repo.set_node_status([n.id for n in stale], "lost")
        for cluster_id in overdue:
            runtime.starting.pop(cluster_id, None)
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


async def recover_orphans(context: ServiceContext) -> None:
    """Clusters whose owning service process (on this host) is gone lost their nodes with
    it: mark them failed, and fail the workflows that were running on them."""
    host = owner_id().rsplit(":", 1)[0]
    async with context.unit_of_work() as uow:
        repo = ClusterRepository(uow.session)
        for cluster in await repo.active():
            if cluster.owner is None:
                continue
            owner_host, _, owner_pid = cluster.owner.rpartition(":")
            if owner_host != host or psutil.pid_exists(int(owner_pid)):
                continue
            await abandon_cluster(
                context, uow, cluster, "the cluster service that ran its nodes exited"
            )


async def release_all(context: ServiceContext) -> None:
    """On shutdown: stop every node this process started; their workflows cannot go on."""
    runtime = runtime_of(context)
    await runtime.cancel_tasks()
    owned = runtime.manager.clusters()
    try:
        async with context.unit_of_work() as uow:
            repo = ClusterRepository(uow.session)
            for cluster_id in owned:
                cluster = await repo.get(cluster_id, for_update=True)
                if cluster is not None:
                    await abandon_cluster(context, uow, cluster, "the cluster service stopped")
    finally:
        await asyncio.to_thread(runtime.manager.stop_all, runtime.settings.node_stop_grace_s)


async def abandon_cluster(
    context: ServiceContext,
    uow: UnitOfWork,
    cluster: Cluster,
    reason: str,
    *,
    status: str = "failed",
) -> None:
    """Stop a cluster's nodes and fail the workflow running on it, in its current phase."""
    await stop_cluster(context, uow, cluster, status=status, error=reason)
    if cluster.workflow_id is None:
        return
    workflows = WorkflowRepository(uow.session, cluster.tenant_id)
    workflow = await workflows.get(cluster.workflow_id, for_update=True)
    if workflow is None:
        return
    phase = workflow.current_phase
    if fail_phase(workflow, await workflows.phases_of(workflow.id), phase, reason):
        await uow.emit(
            PhaseFailed(
                workflow_id=workflow.id, tenant_id=workflow.tenant_id, phase=phase, reason=reason
            )
        )
