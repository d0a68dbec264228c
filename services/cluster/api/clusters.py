"""HTTP routes for clusters: start a standalone cluster of node processes, inspect clusters
and their nodes, and stop one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from services.cluster.background import launch
from services.cluster.models import Cluster, Node
from services.cluster.repository import ClusterRepository
from services.cluster.schemas import ClusterOut, NodeOut
from services.cluster.service.admission import admit_or_queue, check_quotas, queue_positions
from services.cluster.service.supervision import abandon_cluster
from services.cluster.state import ClusterContextDep
from shared.errors import NotFound
from shared.security import CurrentPrincipal
from shared.service_app import UnitOfWorkDep
from shared.spec import ClusterSpec

router = APIRouter(prefix="/clusters", tags=["clusters"])

ClusterId = Annotated[uuid.UUID, Path(description="The cluster's id.")]


def _node_out(node: Node, now: datetime) -> NodeOut:
    heard = node.last_heartbeat_at
    return NodeOut(
        id=node.id,
        role=node.role,
        rank=node.rank,
        pid=node.pid,
        host=node.host,
        status=node.status,
        registered_at=node.registered_at,
        last_heartbeat_at=heard,
        heartbeat_age_s=round((now - heard).total_seconds(), 3) if heard else None,
    )


def cluster_out(
    cluster: Cluster, nodes: list[Node], queue_position: int | None = None
) -> ClusterOut:
    now = datetime.now(UTC)
    return ClusterOut(
        id=cluster.id,
        workflow_id=cluster.workflow_id,
        status=cluster.status,
        layout=cluster.layout,
        error=cluster.error,
        topology=cluster.topology,
        nodes=[_node_out(n, now) for n in nodes],
        queue_position=queue_position,
        created_at=cluster.created_at,
        updated_at=cluster.updated_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ClusterOut)
async def create_cluster(
    layout: ClusterSpec, principal: CurrentPrincipal, context: ClusterContextDep
) -> ClusterOut:
    """Start a standalone cluster: node processes that register and prove their topology.
    Queued (`status: queued`) while the host is full; 429 when the tenant's quotas are used."""
    # Committed before the processes start, so their registrations find the rows.
    async with context.unit_of_work() as uow:
        await check_quotas(
            context.settings, uow, principal.tenant_id, layout.node_count, workflow=False
        )
        repo = ClusterRepository(uow.session, principal.tenant_id)
        cluster = await repo.create(
            uuid.uuid4(), principal.tenant_id, None, layout.model_dump(mode="json")
        )
        plans = await admit_or_queue(context, uow, cluster)
    if plans is not None:
        await launch(context, cluster, plans)
    async with context.unit_of_work() as uow:
        repo = ClusterRepository(uow.session, principal.tenant_id)
        started = await repo.get(cluster.id)
        assert started is not None, "created above"
        places = await queue_positions(uow.session, [started.status])
        return cluster_out(started, await repo.nodes_of(cluster.id), places.get(cluster.id))


@router.get("", response_model=list[ClusterOut])
async def list_clusters(
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[ClusterOut]:
    """The caller's clusters, newest first, with their nodes."""
    repo = ClusterRepository(uow.session, principal.tenant_id)
    clusters = await repo.newest(limit)
    nodes = await repo.nodes([c.id for c in clusters])
    places = await queue_positions(uow.session, [c.status for c in clusters])
    return [cluster_out(c, nodes[c.id], places.get(c.id)) for c in clusters]


@router.get("/{cluster_id}", response_model=ClusterOut)
async def get_cluster(
    cluster_id: ClusterId, uow: UnitOfWorkDep, principal: CurrentPrincipal
) -> ClusterOut:
    """A cluster with each node's status, pid and heartbeat age."""
    repo = ClusterRepository(uow.session, principal.tenant_id)
    cluster = await repo.get(cluster_id)
    if cluster is None:
        raise NotFound(f"no cluster {cluster_id}")
    places = await queue_positions(uow.session, [cluster.status])
    return cluster_out(cluster, await repo.nodes_of(cluster_id), places.get(cluster_id))


@router.delete("/{cluster_id}", response_model=ClusterOut)
async def delete_cluster(
    cluster_id: ClusterId,
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    context: ClusterContextDep,
) -> ClusterOut:
    """Stop a cluster's nodes. A workflow still running on it fails, since it lost its nodes."""
    repo = ClusterRepository(uow.session, principal.tenant_id)
    cluster = await repo.get(cluster_id, for_update=True)
    if cluster is None:
        raise NotFound(f"no cluster {cluster_id}")
    reason = f"cluster {cluster_id} was stopped by its owner"
    await abandon_cluster(context, uow, cluster, reason, status="stopped")
    await uow.session.flush()
    return cluster_out(cluster, await repo.nodes_of(cluster_id))
