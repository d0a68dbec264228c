"""The node half of phase 2: start a cluster's node processes, record their registrations,
prove the topology is connected, and release the nodes when they are no longer needed."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from services.cluster.cluster_repository import ACTIVE_CLUSTER, LIVE_NODE, ClusterRepository
from services.cluster.models import Cluster, Node
from services.cluster.process_manager import NodePlan, plan_nodes
from services.cluster.runtime import runtime_of
from services.cluster.topology import NodeAddress, verify_topology
from services.cluster.workflow_repository import WorkflowRepository
from services.cluster.workflow_status import update_phase_detail
from shared.db import UnitOfWork
from shared.events import ClusterNodesReady, NodeInfo, NodeRegistered, PhaseFailed
from shared.service_app import ServiceContext
from shared.spec import ClusterSpec, GatesSpec

logger = logging.getLogger(__name__)


async def claim_nodes(context: ServiceContext, uow: UnitOfWork, cluster: Cluster) -> list[NodePlan]:
    """Record the cluster's nodes (not started yet) as this process's. Commit before
    `launch_nodes`, so a node's registration always finds its cluster and its row."""
    plans = plan_nodes(cluster.id, cluster.layout)
    await ClusterRepository(uow.session).add_nodes(
        cluster.id, [{"id": p.node_id, "role": p.role, "rank": p.rank, "pid": None} for p in plans]
    )
    cluster.owner = runtime_of(context).owner
    cluster.updated_at = datetime.now(UTC)
    await uow.session.flush()
    return plans


async def launch_nodes(context: ServiceContext, cluster: Cluster, plans: list[NodePlan]) -> None:
    """Start one process per planned node and record their pids."""
    runtime = runtime_of(context)
    runtime.nodes_started(cluster.id)
    try:
        started = await asyncio.to_thread(
            runtime.manager.start,
            cluster.id,
            plans,
            workflow_id=cluster.workflow_id,
            tenant_id=cluster.tenant_id,
        )
    except OSError as exc:
        async with context.unit_of_work() as uow:
            locked = await ClusterRepository(uow.session).get(cluster.id, for_update=True)
            if locked is not None:
                await fail_cluster(context, uow, locked, f"could not start node processes: {exc}")
        return
    async with context.unit_of_work() as uow:
        await ClusterRepository(uow.session).record_pids({n.node_id: n.pid for n in started})


async def record_registration(context: ServiceContext, event: NodeRegistered) -> None:
    """Mark the node registered; once the whole cluster is, check its topology."""
    runtime = runtime_of(context)
    async with context.unit_of_work() as uow:
        if not await uow.first_time("cluster-node-registered", event.event_id):
            return
        repo = ClusterRepository(uow.session)
        cluster = await repo.get(event.cluster_id, event.tenant_id, for_update=True)
        if cluster is None:
            logger.warning("registration of %s for unknown cluster", event.node.node_id)
            return
        await repo.register(cluster.id, event.node, event.occurred_at)
        nodes = await repo.nodes_of(cluster.id)
        registered = sum(1 for n in nodes if n.status == "registered")
        everyone = registered >= expected_nodes(cluster)
        verify = cluster.status == "starting" and everyone and cluster.id not in runtime.verifying
    if verify:  # after the commit, so the check sees every registration
        runtime.verifying.add(cluster.id)
        runtime.spawn(verify_cluster(context, cluster.id), name=f"verify-{cluster.id}")


def expected_nodes(cluster: Cluster) -> int:
    return ClusterSpec.model_validate(cluster.layout).node_count


def node_info(node: Node) -> NodeInfo:
    return NodeInfo(
        node_id=node.id,
        role=node.role,  # type: ignore[arg-type]
        rank=node.rank,
        pid=node.pid or 0,
        host=node.host or "",
    )


async def verify_cluster(context: ServiceContext, cluster_id: uuid.UUID) -> None:
    runtime = runtime_of(context)
    try:
        async with context.unit_of_work() as uow:
            repo = ClusterRepository(uow.session)
            cluster = await repo.get(cluster_id)
            nodes = await repo.nodes_of(cluster_id)
        if cluster is None or cluster.status != "starting":
            return
        addresses = [
            NodeAddress(n.id, n.role, n.rank, n.host or runtime.settings.node_host)
            for n in nodes
            if n.status == "registered"
        ]
        topology = await verify_topology(
            context.broker.connection, addresses, runtime.settings.topology_timeout_s
        )
        await _conclude(context, cluster_id, topology)
    finally:
        runtime.verifying.discard(cluster_id)
        runtime.starting.pop(cluster_id, None)


async def _conclude(
    context: ServiceContext, cluster_id: uuid.UUID, topology: dict[str, Any]
) -> None:
    """Apply phase 2's node gate: enough registered nodes, and a connected topology."""
    async with context.unit_of_work() as uow:
        repo = ClusterRepository(uow.session)
        cluster = await repo.get(cluster_id, for_update=True)
        if cluster is None or cluster.status != "starting":
            return
        nodes = [n for n in await repo.nodes_of(cluster_id) if n.status == "registered"]
        workflow = None
        if cluster.workflow_id is not None:
            workflow = await WorkflowRepository(uow.session, cluster.tenant_id).get(
                cluster.workflow_id, for_update=True
            )
        spec = workflow.spec if workflow is not None else {}
        min_nodes = GatesSpec.model_validate(spec.get("gates", {})).min_nodes if workflow else 1
        cluster.topology = topology
        if not topology["connected"]:
            failed = [f"{c['node_id']}: {c['error']}" for c in topology["checks"] if not c["ok"]]
            reason = "topology not connected: " + "; ".join(failed or ["no nodes to connect"])
        elif len(nodes) < min_nodes:
            reason = f"{len(nodes)} nodes registered; the gate requires {min_nodes}"
        else:
            reason = None
        if reason is not None:
            await fail_cluster(context, uow, cluster, reason)
            return
        repo.set_status(cluster, "ready")
        if workflow is None:
            return
        deployed = {
            "cluster_id": str(cluster.id),
            "nodes": [node_info(n).model_dump() for n in nodes],
            "topology": topology,
        }
        await context.memory.put(
            cluster.tenant_id, str(workflow.id), "neural/nodes-deployed", deployed
        )
        phases = await WorkflowRepository(uow.session, cluster.tenant_id).phases_of(workflow.id)
        summary = {"nodes": len(nodes), "topology": "connected", "cluster_id": str(cluster.id)}
        update_phase_detail(workflow, phases[2], summary)
        await uow.emit(
            ClusterNodesReady(
                workflow_id=workflow.id,
                tenant_id=cluster.tenant_id,
                cluster_id=cluster.id,
                nodes=[node_info(n) for n in nodes],
                spec=spec,
            )
        )


async def fail_cluster(
    context: ServiceContext, uow: UnitOfWork, cluster: Cluster, reason: str
) -> None:
    """Phase 2 failed on the node side: stop the nodes and report it for the workflow."""
    logger.warning("cluster %s failed: %s", cluster.id, reason)
    await stop_cluster(context, uow, cluster, status="failed", error=reason)
    if cluster.workflow_id is not None:
        await uow.emit(
            PhaseFailed(
                workflow_id=cluster.workflow_id,
                tenant_id=cluster.tenant_id,
                phase=2,
                reason=reason,
            )
        )


async def stop_cluster(
    context: ServiceContext,
    uow: UnitOfWork,
    cluster: Cluster,
    *,
    status: str = "stopped",
    error: str | None = None,
) -> None:
    runtime = runtime_of(context)
    repo = ClusterRepository(uow.session)
    nodes = await repo.nodes_of(cluster.id)
    pids = {n.id: n.pid for n in nodes if n.pid and n.status in LIVE_NODE}
    await asyncio.to_thread(
        runtime.manager.stop_cluster, cluster.id, pids, runtime.settings.node_stop_grace_s
    )
    runtime.starting.pop(cluster.id, None)
    await repo.set_node_status([n.id for n in nodes], "stopped")
    if cluster.status in ACTIVE_CLUSTER:
        repo.set_status(cluster, status, error)


async def release_workflow_nodes(
    context: ServiceContext, uow: UnitOfWork, workflow_id: uuid.UUID
) -> None:
    """The workflow finished (or failed): its nodes are no longer needed."""
    for cluster in await ClusterRepository(uow.session).of_workflow(workflow_id):
        if cluster.status in ACTIVE_CLUSTER:
            await stop_cluster(context, uow, cluster)
