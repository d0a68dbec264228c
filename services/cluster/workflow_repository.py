"""All SQL about workflows and their phases. Domain code flushes; the boundary commits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.cluster.models import Workflow, WorkflowPhase
from shared.events import PHASE_NAMES


class WorkflowRepository:
    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        self._session = session
        self._tenant = tenant_id

    async def create(
        self, workflow_id: uuid.UUID, name: str, spec: dict[str, Any]
    ) -> tuple[Workflow, dict[int, WorkflowPhase]]:
        now = datetime.now(UTC)
        workflow = Workflow(
            id=workflow_id,
            tenant_id=self._tenant,
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
            Workflow.id == workflow_id, Workflow.tenant_id == self._tenant
        )
        if for_update:
            stmt = stmt.with_for_update()
        result: Workflow | None = await self._session.scalar(stmt)
        return result

    async def id_taken(self, workflow_id: uuid.UUID) -> bool:
        """Whether any tenant already has a workflow with this id (events carry their own)."""
        found = await self._session.scalar(select(Workflow.id).where(Workflow.id == workflow_id))
        return found is not None

    async def newest(self, limit: int) -> list[Workflow]:
        result = await self._session.scalars(
            select(Workflow)
            .where(Workflow.tenant_id == self._tenant)
            .order_by(Workflow.created_at.desc(), Workflow.id)
            .limit(limit)
        )
        return list(result)

    async def count(self) -> int:
        total = await self._session.scalar(
            select(func.count()).select_from(Workflow).where(Workflow.tenant_id == self._tenant)
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

    async def phases_of(self, workflow_id: uuid.UUID) -> dict[int, WorkflowPhase]:
        found = await self.phases([workflow_id])
        return {phase.phase: phase for phase in found[workflow_id]}
