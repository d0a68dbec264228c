"""Admission: how much one tenant may hold, and how many node processes this host runs.

A tenant's quotas (clusters, node processes, unfinished workflows) are checked when the work
is asked for: past one, the request is refused with 429 naming it. The host's capacity is
checked when a cluster's nodes would start: past it the cluster is `queued` (its workflow
too, with its place in line) and started, first come first, as capacity frees. Both checks
hold a Postgres advisory lock, so concurrent requests cannot pass a limit together."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import psutil
from sqlalchemy.ext.asyncio import AsyncSession

from services.cluster.models import Cluster
from services.cluster.process_manager import NodePlan
from services.cluster.repository import QUEUED, ClusterRepository, WorkflowRepository
from services.cluster.service.deadlines import SETUP_PHASE, DeadlinePolicy
from services.cluster.service.nodes import claim_nodes, expected_nodes
from services.cluster.settings import ClusterSettings
from services.cluster.state import ClusterContext
from shared.db import SYSTEM, UnitOfWork, advisory_lock
from shared.errors import TooManyRequests, Unprocessable

# A node process with torch imported and a small model resident.
NODE_MEMORY_MB = 400
# Nodes mostly wait (on a task, at the rendezvous); a host runs a few per core.
NODES_PER_CORE = 8
# The share of the host's memory node processes may take; the services need the rest.
NODE_MEMORY_SHARE = 0.75

QUOTA_SETTINGS = {
    "workflows": "NEXUS_TENANT_MAX_WORKFLOWS",
    "clusters": "NEXUS_TENANT_MAX_CLUSTERS",
    "nodes": "NEXUS_TENANT_MAX_NODES",
}


def default_node_capacity() -> int:
    """The node processes this machine holds: the fewer of what its memory and cores allow."""
    by_memory = psutil.virtual_memory().total * NODE_MEMORY_SHARE / (NODE_MEMORY_MB * 2**20)
    by_cores = (os.cpu_count() or 1) * NODES_PER_CORE
    return max(4, int(min(by_memory, by_cores)))


def node_capacity(settings: ClusterSettings) -> int:
    return settings.max_node_processes or default_node_capacity()


@dataclass(frozen=True)
class Quotas:
    workflows: int
    clusters: int
    nodes: int

    @classmethod
    def for_tenant(cls, settings: ClusterSettings, tenant_id: str) -> Quotas:
        own = settings.tenant_quotas.get(tenant_id, {})
        return cls(
            workflows=own.get("workflows", settings.tenant_max_workflows),
            clusters=own.get("clusters", settings.tenant_max_clusters),
            nodes=own.get("nodes", settings.tenant_max_nodes),
        )


async def check_quotas(
    settings: ClusterSettings, uow: UnitOfWork, tenant_id: str, nodes: int, *, workflow: bool
) -> None:
    """Raise `TooManyRequests` naming the first quota a new cluster of `nodes` (and a new
    workflow, if `workflow`) would pass; `Unprocessable` if the host can never hold it. The
    lock is held until the caller's transaction, which records the new work, ends."""
    capacity = node_capacity(settings)
    if nodes > capacity:
        raise Unprocessable(
            f"the cluster needs {nodes} node processes; this host runs at most {capacity} "
            "(NEXUS_MAX_NODE_PROCESSES)"
        )
    await advisory_lock(uow.session, f"cluster.quotas:{tenant_id}")
    quotas = Quotas.for_tenant(settings, tenant_id)
    if workflow:
        unfinished = await WorkflowRepository(uow.session, tenant_id).count_unfinished()
        _within("workflows", unfinished, 1, quotas.workflows, "unfinished workflows")
    held = await ClusterRepository(uow.session, tenant_id).held()
    _within("clusters", len(held), 1, quotas.clusters, "clusters")
    _within("nodes", sum(expected_nodes(c) for c in held), nodes, quotas.nodes, "node processes")


def _within(quota: str, used: int, more: int, limit: int, what: str) -> None:
    if used + more > limit:
        raise TooManyRequests(
            f"quota '{quota}' exceeded: the tenant holds {used} {what} and asks for {more} "
            f"more, its quota is {limit} ({QUOTA_SETTINGS[quota]})"
        )


async def admit_or_queue(
    context: ClusterContext, uow: UnitOfWork, cluster: Cluster
) -> list[NodePlan] | None:
    """Claim the cluster's nodes if the host has room and no cluster waits before it; else
    queue it (None)."""
    await advisory_lock(uow.session, _host_lock(context))
    repo = ClusterRepository(uow.session, SYSTEM)
    waiting = [c for c in await repo.queued() if c.id != cluster.id]
    if not waiting and expected_nodes(cluster) <= await _room(context, repo):
        return await claim_nodes(context, uow, cluster)
    await _queue(uow, cluster)
    return None


async def admit_queued(
    context: ClusterContext, uow: UnitOfWork
) -> list[tuple[Cluster, list[NodePlan]]]:
    """Claim the nodes of the queued clusters that fit now, in order; the first that does not
    fit stops the pass, so a large cluster is not overtaken forever by small ones."""
    await advisory_lock(uow.session, _host_lock(context))
    repo = ClusterRepository(uow.session, SYSTEM)
    room = await _room(context, repo)
    policy = DeadlinePolicy.from_settings(context.settings)
    admitted = []
    for cluster in await repo.queued(for_update=True):
        need = expected_nodes(cluster)
        if need > room:
            break
        room -= need
        repo.set_status(cluster, "starting")
        await _resume_workflow(uow, cluster, policy)
        admitted.append((cluster, await claim_nodes(context, uow, cluster)))
    return admitted


async def queue_positions(session: AsyncSession, statuses: list[str]) -> dict[uuid.UUID, int]:
    """Each queued cluster's place in line (1: next to start), by cluster and by workflow;
    looked up only when one of `statuses` (of the records to show) is queued."""
    positions: dict[uuid.UUID, int] = {}
    if QUEUED not in statuses:
        return positions
    for place, cluster in enumerate(await ClusterRepository(session, SYSTEM).queued(), 1):
        positions[cluster.id] = place
        if cluster.workflow_id is not None:
            positions[cluster.workflow_id] = place
    return positions


def _host_lock(context: ClusterContext) -> str:
    return f"cluster.host:{_host(context)}"


def _host(context: ClusterContext) -> str:
    return context.state.owner.rsplit(":", 1)[0]


async def _room(context: ClusterContext, repo: ClusterRepository) -> int:
    """Node processes the host may still start: every service process on it counts, and so
    do this one's nodes that are stopping but not gone yet."""
    used = sum(expected_nodes(c) for c in await repo.active_on_host(_host(context)))
    used += context.state.manager.stopping
    return node_capacity(context.settings) - used


async def _queue(uow: UnitOfWork, cluster: Cluster) -> None:
    ClusterRepository(uow.session, SYSTEM).set_status(cluster, QUEUED)
    if cluster.workflow_id is None:
        return
    workflow = await WorkflowRepository(uow.session, SYSTEM).get(cluster.workflow_id)
    if workflow is not None and workflow.status == "running":
        workflow.status, workflow.updated_at = QUEUED, datetime.now(UTC)


async def _resume_workflow(uow: UnitOfWork, cluster: Cluster, policy: DeadlinePolicy) -> None:
    """A queued workflow runs again; phase 2's deadline counts from now, not from its wait."""
    if cluster.workflow_id is None:
        return
    workflows = WorkflowRepository(uow.session, SYSTEM)
    workflow = await workflows.get(cluster.workflow_id, for_update=True)
    if workflow is None or workflow.status != QUEUED:
        return
    now = datetime.now(UTC)
    workflow.status, workflow.updated_at = "running", now
    setup = (await workflows.phases_of(workflow.id))[SETUP_PHASE]
    deadline = policy.at_start(workflow, SETUP_PHASE, now)
    waited = round((now - (setup.started_at or now)).total_seconds(), 3)
    setup.detail = {**(setup.detail or {}), "queued_s": waited, "deadline_at": deadline.isoformat()}
