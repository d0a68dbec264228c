"""All SQL of the validator service. Domain code flushes; the boundary commits."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.validator.models import OPEN_STATUSES, Validation
from shared.db import Scope, check_scope, in_scope, locked


class ValidationRepository:
    """Validations of one tenant, or of every tenant for SYSTEM (event handlers, which
    compare the tenant on the row with the event's)."""

    def __init__(self, session: AsyncSession, scope: Scope) -> None:
        self._session = session
        self._scope = check_scope(scope)

    async def create(
        self,
        *,
        workflow_id: uuid.UUID,
        cluster_id: uuid.UUID | None,
        trigger: str,
        model_uri: str,
        spec: dict[str, Any],
        gates: dict[str, Any],
    ) -> Validation:
        validation = Validation(
            id=uuid.uuid4(),
            tenant_id=self._tenant(),
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
        stmt = select(Validation).where(
            Validation.id == validation_id, in_scope(Validation.tenant_id, self._scope)
        )
        if for_update:
            stmt = locked(stmt)
        validation: Validation | None = await self._session.scalar(stmt)
        return validation

    def _tenant(self) -> str:
        assert isinstance(self._scope, str), "validations are created for one tenant"
        return self._scope

    async def list(
        self, workflow_id: uuid.UUID | None, status: str | None, limit: int
    ) -> list[Validation]:
        stmt = select(Validation).where(in_scope(Validation.tenant_id, self._scope))
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
                in_scope(Validation.tenant_id, self._scope),
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
                in_scope(Validation.tenant_id, self._scope),
                Validation.workflow_id == workflow_id,
                Validation.status.in_(OPEN_STATUSES),
            )
            .limit(1)
        )

    async def open_on_node(self, cluster_id: uuid.UUID, node_id: str) -> Sequence[Validation]:
        """The validations still queued or running on a node of a cluster, locked."""
        return await self._open(Validation.cluster_id == cluster_id, Validation.node_id == node_id)

    async def open_of_workflow(self, workflow_id: uuid.UUID) -> Sequence[Validation]:
        """The workflow's validations still queued or running, locked."""
        return await self._open(Validation.workflow_id == workflow_id)

    async def _open(self, *where: ColumnElement[bool]) -> Sequence[Validation]:
        result = await self._session.scalars(
            locked(
                select(Validation).where(
                    in_scope(Validation.tenant_id, self._scope),
                    Validation.status.in_(OPEN_STATUSES),
                    *where,
                )
            )
        )
        return result.all()

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
