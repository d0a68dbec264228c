"""A lost node of a ready cluster is replaced: a new process with the same role and rank
starts on this host, registers, and is announced on `nexus.node.joined`, where the trainer
takes it into a job that waits for one (a lost parameter server) or keeps it as a spare for
the next loss. At most `node_replacements` per cluster, so a node that dies as it starts
cannot respawn forever."""

from __future__ import annotations

import asyncio
import logging
import uuid

from services.cluster.models import Cluster, Node
from services.cluster.process_manager import NodePlan
from services.cluster.repository import ClusterRepository
from services.cluster.service.nodes import expected_nodes
from services.cluster.state import ClusterContext
from shared.db import SYSTEM, UnitOfWork

logger = logging.getLogger(__name__)


async def replace_lost(
    context: ClusterContext, uow: UnitOfWork, lost: list[Node], clusters: dict[uuid.UUID, Cluster]
) -> None:
    """Plan a replacement for each lost node of a ready cluster this process runs; the
    processes start once the unit commits."""
    state, limit = context.state, context.settings.node_replacements
    repo = ClusterRepository(uow.session, SYSTEM)
    for node in lost:
        cluster = clusters.get(node.cluster_id)
        if cluster is None or cluster.status != "ready" or cluster.owner != state.owner:
            continue
        made = len(await repo.nodes_of(cluster.id)) - expected_nodes(cluster)
        if made >= limit:
            logger.warning(
                "cluster %s: %d nodes replaced already; %s is not", cluster.id, made, node.id
            )
            continue
        role = node.role.replace("_", "-")
        plan = NodePlan(
            f"{cluster.id.hex[:8]}-{role}-{node.rank}-r{made + 1}", node.role, node.rank
        )
        row = {"id": plan.node_id, "role": plan.role, "rank": plan.rank, "pid": None}
        await repo.add_nodes(cluster.id, [row])

        async def start(cluster: Cluster = cluster, plan: NodePlan = plan) -> None:
            await _start(context, cluster, plan)

        uow.after_commit(start)


async def _start(context: ClusterContext, cluster: Cluster, plan: NodePlan) -> None:
    state = context.state
    try:
        (started,) = await asyncio.to_thread(
            state.manager.start,
            cluster.id,
            [plan],
            workflow_id=cluster.workflow_id,
            tenant_id=cluster.tenant_id,
        )
    except OSError as exc:
        logger.warning("replacement node %s did not start: %s", plan.node_id, exc)
        async with context.unit_of_work() as uow:
            await ClusterRepository(uow.session, SYSTEM).set_node_status([plan.node_id], "failed")
        return
    logger.info("node %s replaces a lost %s of cluster %s", plan.node_id, plan.role, cluster.id)
    state.metrics.replaced.labels(role=plan.role).inc()
    async with context.unit_of_work() as uow:
        await ClusterRepository(uow.session, SYSTEM).record_pids({plan.node_id: started.pid})
