"""A cluster's life: claim and start its node processes, record their registrations, report
how the cluster came up (its measured topology, or why it did not), and stop its nodes when
they are no longer needed. Domain code: it flushes, the caller's unit of work commits, and
processes are stopped only after that commit."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from services.cluster.models import Cluster, Node
from services.cluster.process_manager import NodePlan, NodesClosed, StartedNode, plan_nodes
from services.cluster.repository import (
    HELD_CLUSTER,
    LIVE_NODE,
    ClusterRepository,
    WorkflowRepository,
)
from services.cluster.service.topology import NodeAddress
from services.cluster.state import ClusterContext
from shared.contracts import ClusterStarted, MemoryWritten, NodeInfo, NodeJoined, NodeRegistered
from shared.db import SYSTEM, UnitOfWork
from shared.project_layout import MemoryKey
from shared.spec import ClusterSpec, WorkflowSpec
from shared.telemetry import step

logger = logging.getLogger(__name__)


async def claim_nodes(context: ClusterContext, uow: UnitOfWork, cluster: Cluster) -> list[NodePlan]:
    """Record the cluster's nodes (not started yet) as this process's. Commit before
    `start_processes`, so a node's registration always finds its cluster and its row."""
    plans = plan_nodes(cluster.id, cluster.layout)
    await ClusterRepository(uow.session, cluster.tenant_id).add_nodes(
        cluster.id, [{"id": p.node_id, "role": p.role, "rank": p.rank, "pid": None} for p in plans]
    )
    cluster.owner = context.state.owner
    cluster.updated_at = datetime.now(UTC)
    await uow.session.flush()
    return plans


async def start_processes(
    context: ClusterContext, cluster: Cluster, plans: list[NodePlan]
) -> list[StartedNode] | str:
    """Start one process per planned node (no database); the started nodes, or why not."""
    state = context.state
    state.nodes_started(cluster.id)
    try:
        with step("start node processes", nodes=len(plans), start=context.settings.node_start):
            return await asyncio.to_thread(
                state.manager.start,
                cluster.id,
                plans,
                workflow_id=cluster.workflow_id,
                tenant_id=cluster.tenant_id,
            )
    except (OSError, NodesClosed) as exc:
        return f"could not start node processes: {exc}"


async def record_launch(
    context: ClusterContext,
    uow: UnitOfWork,
    cluster_id: uuid.UUID,
    outcome: list[StartedNode] | str,
) -> None:
    """The nodes' pids, or the cluster's failure when its processes could not start."""
    repo = ClusterRepository(uow.session, SYSTEM)
    if isinstance(outcome, str):
        cluster = await repo.get(cluster_id, for_update=True)
        if cluster is not None:
            await fail_cluster(context, uow, cluster, outcome)
        return
    await repo.record_pids({n.node_id: n.pid for n in outcome})


async def record_registration(
    context: ClusterContext, uow: UnitOfWork, event: NodeRegistered
) -> bool:
    """Mark the node registered; True when the whole cluster now is and its topology is to
    be checked (after the commit, so the check sees every registration)."""
    repo = ClusterRepository(uow.session, event.tenant_id)
    cluster = await repo.get(event.cluster_id, for_update=True)
    if cluster is None:
        logger.warning("registration of %s for unknown cluster", event.node.node_id)
        return False
    node = await repo.register(cluster.id, event.node, event.occurred_at)
    if node.status == "registered":  # not a late registration of a node already gone
        # From now on its silence counts (its heartbeats start right after registering).
        context.state.last_heard.setdefault(node.id, time.monotonic())
        context.state.metrics.joined.labels(role=node.role).inc()
        await uow.emit(
            NodeJoined(
                workflow_id=event.workflow_id,
                tenant_id=event.tenant_id,
                cluster_id=cluster.id,
                node=event.node,
            )
        )
    nodes = await repo.nodes_of(cluster.id)
    registered = sum(1 for n in nodes if n.status == "registered")
    everyone = registered >= expected_nodes(cluster)
    verify = cluster.status == "starting" and everyone and cluster.id not in context.state.verifying
    if verify:
        context.state.verifying.add(cluster.id)
    return verify


def expected_nodes(cluster: Cluster) -> int:
    return ClusterSpec.model_validate(cluster.layout).node_count


def node_info(node: Node) -> NodeInfo:
    return NodeInfo(
        node_id=node.id,
        role=node.role,  # type: ignore[arg-type]  # the column holds only NodeRole values
        rank=node.rank,
        pid=node.pid or 0,
        host=node.host or "",
    )


async def topology_members(
    context: ClusterContext, uow: UnitOfWork, cluster_id: uuid.UUID
) -> list[NodeAddress] | None:
    """The registered nodes whose topology is to be checked; None when the cluster is no
    longer starting (stopped or failed meanwhile)."""
    repo = ClusterRepository(uow.session, SYSTEM)
    cluster = await repo.get(cluster_id)
    if cluster is None or cluster.status != "starting":
        return None
    return [
        NodeAddress(n.id, n.role, n.rank, n.host or context.settings.node_host)
        for n in await repo.nodes_of(cluster_id)
        if n.status == "registered"
    ]


async def conclude_start(
    context: ClusterContext, uow: UnitOfWork, cluster_id: uuid.UUID, topology: dict[str, Any]
) -> None:
    """Record the measured topology. Connected: the cluster is ready, and a workflow's
    cluster reports it (with the `neural/nodes-deployed` key). Not connected: it failed."""
    repo = ClusterRepository(uow.session, SYSTEM)
    cluster = await repo.get(cluster_id, for_update=True)
    if cluster is None or cluster.status != "starting":
        return
    cluster.topology = topology
    if not topology["connected"]:
        failed = [f"{c['node_id']}: {c['error']}" for c in topology["checks"] if not c["ok"]]
        reason = "topology not connected: " + "; ".join(failed or ["no nodes to connect"])
        await fail_cluster(context, uow, cluster, reason)
        return
    repo.set_status(cluster, "ready")
    if cluster.workflow_id is None:
        return
    nodes = [node_info(n) for n in await repo.nodes_of(cluster_id) if n.status == "registered"]
    deployed = {
        "cluster_id": str(cluster.id),
        "nodes": [n.model_dump() for n in nodes],
        "topology": topology,
    }
    await uow.emit(
        MemoryWritten(
            workflow_id=cluster.workflow_id,
            tenant_id=cluster.tenant_id,
            keys={MemoryKey.NODES_DEPLOYED: deployed},
        )
    )
    await uow.emit(
        ClusterStarted(
            workflow_id=cluster.workflow_id,
            tenant_id=cluster.tenant_id,
            cluster_id=cluster.id,
            spec=await _workflow_spec(uow, cluster),
            nodes=nodes,
            topology=topology,
        )
    )


async def fail_cluster(
    context: ClusterContext, uow: UnitOfWork, cluster: Cluster, reason: str
) -> None:
    """The cluster did not come up: stop its nodes and report why for its workflow (the
    trainer, phase 2's owner, fails the phase with this reason)."""
    logger.warning("cluster %s failed: %s", cluster.id, reason)
    await stop_cluster(context, uow, cluster, status="failed", error=reason)
    if cluster.workflow_id is not None:
        await uow.emit(
            ClusterStarted(
                workflow_id=cluster.workflow_id,
                tenant_id=cluster.tenant_id,
                cluster_id=cluster.id,
                spec=await _workflow_spec(uow, cluster),
                nodes=[],
                topology=cluster.topology,
                error=reason,
            )
        )


async def _workflow_spec(uow: UnitOfWork, cluster: Cluster) -> WorkflowSpec:
    """The spec phase 1 validated and stored with the cluster's workflow."""
    assert cluster.workflow_id is not None, "only a workflow's cluster reports how it started"
    workflow = await WorkflowRepository(uow.session, cluster.tenant_id).get(cluster.workflow_id)
    assert workflow is not None, "a workflow's cluster is created with it"
    return WorkflowSpec.model_validate(workflow.spec)


async def stop_cluster(
    context: ClusterContext,
    uow: UnitOfWork,
    cluster: Cluster,
    *,
    status: str = "stopped",
    error: str | None = None,
) -> None:
    """Mark the cluster and its nodes stopped; the processes are stopped after the commit."""
    state = context.state
    repo = ClusterRepository(uow.session, cluster.tenant_id)
    nodes = await repo.nodes_of(cluster.id)
    pids = {n.id: n.pid for n in nodes if n.pid and n.status in LIVE_NODE}
    state.starting.pop(cluster.id, None)
    await repo.set_node_status([n.id for n in nodes], "stopped")
    if cluster.status in HELD_CLUSTER:
        repo.set_status(cluster, status, error)
    grace_s = context.settings.node_stop_grace_s

    async def stop_processes() -> None:
        await asyncio.to_thread(state.manager.stop_cluster, cluster.id, pids, grace_s)
        state.capacity_freed.set()

    uow.after_commit(stop_processes)


async def release_workflow_nodes(
    context: ClusterContext, uow: UnitOfWork, tenant_id: str, workflow_id: uuid.UUID
) -> None:
    """The workflow finished (or failed): its nodes are no longer needed."""
    for cluster in await ClusterRepository(uow.session, tenant_id).of_workflow(workflow_id):
        if cluster.status in HELD_CLUSTER:
            await stop_cluster(context, uow, cluster)
