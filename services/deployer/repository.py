"""All SQL of the deployer: the model registry and the deployments. Callers commit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.deployer.models import Deployment, RegisteredModel
from shared.db import Scope, advisory_lock, in_scope


def _now() -> datetime:
    return datetime.now(UTC)


class DeployerRepository:
    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        self._session = session
        self._tenant = tenant_id

    # --- models ---------------------------------------------------------------------------
    async def register_model(
        self,
        workflow_id: uuid.UUID,
        name: str,
        model_uri: str,
        metrics: dict[str, Any],
        spec: dict[str, Any],
    ) -> RegisteredModel:
        """A new version of `name`: one more than the tenant's latest."""
        # Two registrations of one name at once would both read the same latest version.
        await advisory_lock(self._session, f"deployer.models:{self._tenant}:{name}")
        latest = await self._session.scalar(
            select(func.max(RegisteredModel.version)).where(
                RegisteredModel.tenant_id == self._tenant, RegisteredModel.name == name
            )
        )
        model = RegisteredModel(
            id=uuid.uuid4(),
            tenant_id=self._tenant,
            workflow_id=workflow_id,
            name=name,
            version=(latest or 0) + 1,
            model_uri=model_uri,
            metrics=metrics,
            spec=spec,
            created_at=_now(),
        )
        self._session.add(model)
        await self._session.flush()
        return model

    async def get_model(self, model_id: uuid.UUID) -> RegisteredModel | None:
        model = await self._session.get(RegisteredModel, model_id)
        return model if model is not None and model.tenant_id == self._tenant else None

    async def model_of_workflow(self, workflow_id: uuid.UUID) -> RegisteredModel | None:
        """The version phase 5 of `workflow_id` registered (phase 5 registers one)."""
        stmt = select(RegisteredModel).where(
            RegisteredModel.tenant_id == self._tenant, RegisteredModel.workflow_id == workflow_id
        )
        return await self._session.scalar(stmt.order_by(RegisteredModel.created_at.desc()))

    async def list_models(self, name: str | None, limit: int) -> list[RegisteredModel]:
        stmt = select(RegisteredModel).where(RegisteredModel.tenant_id == self._tenant)
        if name:
            stmt = stmt.where(RegisteredModel.name == name)
        stmt = stmt.order_by(RegisteredModel.created_at.desc(), RegisteredModel.version.desc())
        return list(await self._session.scalars(stmt.limit(limit)))

    # --- deployments ----------------------------------------------------------------------
    async def create_deployment(
        self,
        model: RegisteredModel,
        port: int | None,
        url: str | None,
        previous_id: uuid.UUID | None,
    ) -> Deployment:
        now = _now()
        deployment = Deployment(
            id=uuid.uuid4(),
            model_id=model.id,
            tenant_id=self._tenant,
            workflow_id=model.workflow_id,
            port=port,
            url=url,
            pid=None,
            status="starting",
            previous_deployment_id=previous_id,
            created_at=now,
            updated_at=now,
            error=None,
            checks=None,
        )
        self._session.add(deployment)
        await self._session.flush()
        return deployment

    async def get_deployment(
        self, deployment_id: uuid.UUID, *, for_update: bool = False
    ) -> Deployment | None:
        deployment = await self._session.get(Deployment, deployment_id, with_for_update=for_update)
        if deployment is None or deployment.tenant_id != self._tenant:
            return None
        return deployment

    async def update_deployment(self, deployment_id: uuid.UUID, **changes: Any) -> Deployment:
        deployment = await self.get_deployment(deployment_id, for_update=True)
        assert deployment is not None, "deployments are never deleted"
        for name, value in changes.items():
            setattr(deployment, name, value)
        deployment.updated_at = _now()
        await self._session.flush()
        return deployment

    async def list_deployments(
        self, status: str | None, model_id: uuid.UUID | None, limit: int
    ) -> list[Deployment]:
        stmt = select(Deployment).where(Deployment.tenant_id == self._tenant)
        if status:
            stmt = stmt.where(Deployment.status == status)
        if model_id:
            stmt = stmt.where(Deployment.model_id == model_id)
        stmt = stmt.order_by(Deployment.created_at.desc())
        return list(await self._session.scalars(stmt.limit(limit)))

    async def running_deployment_of(self, name: str) -> Deployment | None:
        """The live deployment of a model name (the newest, should there be several)."""
        stmt = (
            select(Deployment)
            .join(RegisteredModel, RegisteredModel.id == Deployment.model_id)
            .where(
                Deployment.tenant_id == self._tenant,
                Deployment.status == "running",
                RegisteredModel.name == name,
            )
            .order_by(Deployment.created_at.desc())
            .limit(1)
        )
        return await self._session.scalar(stmt)


SERVING = ("starting", "running")


async def count_serving(session: AsyncSession, tenant_id: str | None = None) -> int:
    """Deployments starting or running: of one tenant, or on the whole host."""
    stmt = select(func.count()).where(Deployment.status.in_(SERVING))
    if tenant_id is not None:
        stmt = stmt.where(Deployment.tenant_id == tenant_id)
    return int(await session.scalar(stmt) or 0)


async def deployments_to_restore(
    session: AsyncSession, scope: Scope
) -> list[tuple[Deployment, RegisteredModel]]:
    """Deployments that were live (or mid-rollout) when the deployer last stopped: of one
    tenant, or of all for SYSTEM (the deployer's start-up)."""
    stmt = (
        select(Deployment, RegisteredModel)
        .join(RegisteredModel, RegisteredModel.id == Deployment.model_id)
        .where(
            Deployment.status.in_(("starting", "running")),
            in_scope(Deployment.tenant_id, scope),
        )
        .order_by(Deployment.created_at)
    )
    rows = (await session.execute(stmt)).all()
    return [(row[0], row[1]) for row in rows]
