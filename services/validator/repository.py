"""All SQL of the validator service. Domain code flushes; the boundary commits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.validator.models import OPEN_STATUSES, Validation


class ValidationRepository:
    """Validations of one tenant; `tenant_id=None` is for event handlers, which act for the
    tenant named in the event and check it themselves."""

    def __init__(self, session: AsyncSession, tenant_id: str | None) -> None:
        self._session = session
        self._tenant = tenant_id

    async def create(
        self,
        *,
        tenant_id: str,
        workflow_id: uuid.UUID,
        cluster_id: uuid.UUID | None,
        trigger: str,
        model_uri: str,
        spec: dict[str, Any],
        gates: dict[str, Any],
    ) -> Validation:
        validation = Validation(
            id=uuid.uuid4(),
            tenant_id=tenant_id,
            workflow_id=workflow_id,
            cluster_id=cluster_id,
            trigger=trigger,
            model_uri=model_uri,
            status="queued",
            spec=spec,
            gates=gates,
            results={},
            created_at=datetime.now(UTC),
        )
        self._session.add(validation)
        await self._session.flush()
        return validation

    async def get(self, validation_id: uuid.UUID, *, for_update: bool = False) -> Validation | None:
        validation = await self._session.get(
            Validation, validation_id, with_for_update=for_update or None
        )
        if validation is None or (self._tenant and validation.tenant_id != self._tenant):
            return None
        return validation

    async def list(
        self, workflow_id: uuid.UUID | None, status: str | None, limit: int
    ) -> list[Validation]:
        stmt = select(Validation).where(Validation.tenant_id == self._tenant)
        if workflow_id is not None:
            stmt = stmt.where(Validation.workflow_id == workflow_id)
        if status is not None:
            stmt = stmt.where(Validation.status == status)
        result = await self._session.scalars(
            stmt.order_by(Validation.created_at.desc(), Validation.id).limit(limit)
        )
        return list(result)

    async def latest_for_workflow(self, workflow_id: uuid.UUID) -> Validation | None:
        """The newest validation of the workflow that phase 4 itself started."""
        return await self._session.scalar(
            select(Validation)
            .where(
                Validation.tenant_id == self._tenant,
                Validation.workflow_id == workflow_id,
                Validation.trigger == "phase",
            )
            .order_by(Validation.created_at.desc())
            .limit(1)
        )

    async def open_for_workflow(self, workflow_id: uuid.UUID) -> Validation | None:
        return await self._session.scalar(
            select(Validation)
            .where(
                Validation.tenant_id == self._tenant,
                Validation.workflow_id == workflow_id,
                Validation.status.in_(OPEN_STATUSES),
            )
            .limit(1)
        )

    async def finish(
        self,
        validation: Validation,
        status: str,
        *,
        results: dict[str, Any] | None = None,
        report_uri: str | None = None,
        error: str | None = None,
    ) -> None:
        validation.status = status
        if results is not None:
            validation.results = results
        validation.report_uri = report_uri
        validation.error = error
        validation.finished_at = datetime.now(UTC)
        await self._session.flush()
