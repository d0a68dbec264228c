"""All SQL of the cluster service: workflows and their phases, clusters and their nodes.
Each repository is bound to a tenant, or to SYSTEM for the service's own duties. Domain code
flushes; the boundary commits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.cluster.models import Cluster, Node, Workflow, WorkflowPhase
from shared.contracts import PHASE_NAMES, NodeInfo
from shared.db import Scope, check_scope, in_scope, locked

ACTIVE_CLUSTER = ("starting", "ready")
# Waiting for room on the host: no nodes yet, but it counts against its tenant's quotas.
QUEUED = "queued"
HELD_CLUSTER = (QUEUED, *ACTIVE_CLUSTER)
LIVE_NODE = ("starting", "registered")


class WorkflowRepository:
    def __init__(self, session: AsyncSession, scope: Scope) -> None:
        self._session = session
        self._scope = check_scope(scope)

    async def create(
        self, workflow_id: uuid.UUID, tenant_id: str, name: str, spec: dict[str, Any]
    ) -> tuple[Workflow, dict[int, WorkflowPhase]]:
        now = datetime.now(UTC)
        workflow = Workflow(
            id=workflow_id,
            tenant_id=tenant_id,
            name=name,
            spec=spec,
            status="pending",
            current_phase=1,
            created_at=now,
            updated_at=now,
        )
        self._session.add(workflow)
        await self._session.flush()  # the phases reference the workflow row
        phases = {
            number: WorkflowPhase(
                workflow_id=workflow_id, phase=number, name=phase_name, status="pending"
            )
            for number, phase_name in PHASE_NAMES.items()
        }
        self._session.add_all(phases.values())
        await self._session.flush()
        return workflow, phases

    async def get(self, workflow_id: uuid.UUID, *, for_update: bool = False) -> Workflow | None:
        stmt = select(Workflow).where(
            Workflow.id == workflow_id, in_scope(Workflow.tenant_id, self._scope)
        )
        if for_update:
            stmt = locked(stmt)
        result: Workflow | None = await self._session.scalar(stmt)
        return result

    async def newest(self, limit: int) -> list[Workflow]:
        result = await self._session.scalars(
            select(Workflow)
            .where(in_scope(Workflow.tenant_id, self._scope))
            .order_by(Workflow.created_at.desc(), Workflow.id)
            .limit(limit)
        )
        return list(result)

    async def count_unfinished(self) -> int:
        """Workflows pending, queued or running: what the running-workflows quota counts."""
        stmt = select(func.count()).where(
            Workflow.status.not_in(("completed", "failed")),
            in_scope(Workflow.tenant_id, self._scope),
        )
        return int(await self._session.scalar(stmt) or 0)

    async def count(self) -> int:
        total = await self._session.scalar(
            select(func.count())
            .select_from(Workflow)
            .where(in_scope(Workflow.tenant_id, self._scope))
        )
        return int(total or 0)

    async def phases(self, workflow_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[WorkflowPhase]]:
        by_workflow: dict[uuid.UUID, list[WorkflowPhase]] = {wid: [] for wid in workflow_ids}
        if not workflow_ids:
            return by_workflow
        result = await self._session.scalars(
            select(WorkflowPhase)
            .where(WorkflowPhase.workflow_id.in_(workflow_ids))
            .order_by(WorkflowPhase.workflow_id, WorkflowPhase.phase)
        )
        for phase in result:
            by_workflow[phase.workflow_id].append(phase)
        return by_workflow

    async def running_phases(self) -> list[tuple[Workflow, WorkflowPhase]]:
        """The phase each running workflow is in (the deadline watch's view)."""
        stmt = (
            select(Workflow, WorkflowPhase)
            .join(WorkflowPhase, WorkflowPhase.workflow_id == Workflow.id)
            .where(
                Workflow.status == "running",
                WorkflowPhase.status == "running",
                in_scope(Workflow.tenant_id, self._scope),
            )
        )
        return [(w, p) for w, p in (await self._session.execute(stmt)).all()]

    async def phases_of(self, workflow_id: uuid.UUID) -> dict[int, WorkflowPhase]:
        found = await self.phases([workflow_id])
        return {phase.phase: phase for phase in found[workflow_id]}


class ClusterRepository:
    def __init__(self, session: AsyncSession, scope: Scope) -> None:
        self._session = session
        self._scope = check_scope(scope)

    async def create(
        self,
        cluster_id: uuid.UUID,
        tenant_id: str,
        workflow_id: uuid.UUID | None,
        layout: dict[str, int],
    ) -> Cluster:
        now = datetime.now(UTC)
        cluster = Cluster(
            id=cluster_id,
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            status="starting",
            layout=layout,
            created_at=now,
            updated_at=now,
        )
        self._session.add(cluster)
        await self._session.flush()
        return cluster

    async def get(self, cluster_id: uuid.UUID, *, for_update: bool = False) -> Cluster | None:
        stmt = select(Cluster).where(
            Cluster.id == cluster_id, in_scope(Cluster.tenant_id, self._scope)
        )
        if for_update:
            stmt = locked(stmt)
        found: Cluster | None = await self._session.scalar(stmt)
        return found

    async def newest(self, limit: int) -> list[Cluster]:
        result = await self._session.scalars(
            select(Cluster)
            .where(in_scope(Cluster.tenant_id, self._scope))
            .order_by(Cluster.created_at.desc(), Cluster.id)
            .limit(limit)
        )
        return list(result)

    async def of_workflow(self, workflow_id: uuid.UUID) -> list[Cluster]:
        result = await self._session.scalars(
            locked(
                select(Cluster)
                .where(Cluster.workflow_id == workflow_id, in_scope(Cluster.tenant_id, self._scope))
                .order_by(Cluster.id)
            )
        )
        return list(result)

    async def active(self) -> list[Cluster]:
        result = await self._session.scalars(
            select(Cluster)
            .where(Cluster.status.in_(ACTIVE_CLUSTER), in_scope(Cluster.tenant_id, self._scope))
            .order_by(Cluster.created_at)
        )
        return list(result)

    async def held(self) -> list[Cluster]:
        """The clusters that run or wait to: what a tenant's quotas count."""
        result = await self._session.scalars(
            select(Cluster).where(
                Cluster.status.in_(HELD_CLUSTER), in_scope(Cluster.tenant_id, self._scope)
            )
        )
        return list(result)

    async def active_on_host(self, host: str) -> list[Cluster]:
        """The active clusters whose nodes a service process on `host` started."""
        result = await self._session.scalars(
            select(Cluster).where(
                Cluster.status.in_(ACTIVE_CLUSTER),
                Cluster.owner.startswith(f"{host}:", autoescape=True),
                in_scope(Cluster.tenant_id, self._scope),
            )
        )
        return list(result)

    async def queued(self, *, for_update: bool = False) -> list[Cluster]:
        """The clusters waiting for room, first come first."""
        stmt = (
            select(Cluster)
            .where(Cluster.status == QUEUED, in_scope(Cluster.tenant_id, self._scope))
            .order_by(Cluster.created_at, Cluster.id)
        )
        if for_update:
            stmt = locked(stmt)
        return list(await self._session.scalars(stmt))

    def set_status(self, cluster: Cluster, status: str, error: str | None = None) -> None:
        cluster.status = status
        if error is not None:
            cluster.error = error
        cluster.updated_at = datetime.now(UTC)

    # Nodes are reached through their cluster, which the calls above scope.
    async def nodes(self, cluster_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Node]]:
        by_cluster: dict[uuid.UUID, list[Node]] = {cid: [] for cid in cluster_ids}
        if not cluster_ids:
            return by_cluster
        result = await self._session.scalars(
            select(Node)
            .where(Node.cluster_id.in_(cluster_ids))
            .order_by(Node.cluster_id, Node.role, Node.rank)
        )
        for node in result:
            by_cluster[node.cluster_id].append(node)
        return by_cluster

    async def node(self, node_id: str) -> Node | None:
        """The node by id; get its cluster through `get`, which the scope applies to."""
        return await self._session.get(Node, node_id)

    async def nodes_of(self, cluster_id: uuid.UUID) -> list[Node]:
        return (await self.nodes([cluster_id]))[cluster_id]

    async def add_nodes(self, cluster_id: uuid.UUID, nodes: list[dict[str, Any]]) -> None:
        self._session.add_all(Node(cluster_id=cluster_id, status="starting", **v) for v in nodes)
        await self._session.flush()

    async def record_pids(self, pids: dict[str, int]) -> None:
        # A registration may have landed first and set the same pid; either order is fine.
        for node_id, pid in pids.items():
            await self._session.execute(update(Node).where(Node.id == node_id).values(pid=pid))

    async def register(self, cluster_id: uuid.UUID, info: NodeInfo, at: datetime) -> Node:
        node = await self._session.get(Node, info.node_id, with_for_update=True)
        if node is None:
            node = Node(id=info.node_id, cluster_id=cluster_id, role=info.role, rank=info.rank)
            self._session.add(node)
        node.pid, node.host = info.pid, info.host
        if node.status in LIVE_NODE:
            node.status = "registered"
            node.registered_at = node.registered_at or at
            node.last_heartbeat_at = max(node.last_heartbeat_at or at, at)
        await self._session.flush()
        return node

    async def record_heartbeats(self, beats: dict[str, datetime]) -> None:
        if not beats:
            return
        # ORM bulk UPDATE by primary key: one statement, executemany.
        await self._session.execute(
            update(Node),
            [{"id": node_id, "last_heartbeat_at": at} for node_id, at in beats.items()],
        )

    async def existing_node_ids(self, node_ids: list[str]) -> set[str]:
        result = await self._session.scalars(select(Node.id).where(Node.id.in_(node_ids)))
        return set(result)

    async def stale_nodes(self, heard_before: datetime) -> list[Node]:
        result = await self._session.scalars(
            select(Node)
            .where(Node.status == "registered", Node.last_heartbeat_at < heard_before)
            .with_for_update(skip_locked=True)
        )
        return list(result)

    async def live_nodes(self, node_ids: list[str]) -> list[Node]:
        """Those of `node_ids` still starting or registered, locked."""
        result = await self._session.scalars(
            locked(
                select(Node)
                .where(Node.id.in_(node_ids), Node.status.in_(LIVE_NODE))
                .order_by(Node.id)
            )
        )
        return list(result)

    async def set_node_status(self, node_ids: list[str], status: str) -> None:
        if node_ids:
            await self._session.execute(
                update(Node)
                .where(Node.id.in_(node_ids), Node.status.in_(LIVE_NODE))
                .values(status=status)
            )
