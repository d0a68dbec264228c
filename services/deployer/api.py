"""HTTP routes of the deployer: the model registry and the deployments serving it."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from services.deployer.models import Deployment
from services.deployer.process_manager import PortUnavailable
from services.deployer.repository import DeployerRepository
from services.deployer.schemas import DeploymentCreate, DeploymentOut, DeploymentStatus, ModelOut
from services.deployer.state import DeployerContextDep
from shared.errors import Conflict, NexusError, NotFound
from shared.security import CurrentPrincipal
from shared.service_app import UnitOfWorkDep

router = APIRouter(tags=["deployer"])

Limit = Annotated[int, Query(ge=1, le=1000)]


def _out(deployment: Deployment) -> DeploymentOut:
    return DeploymentOut.model_validate(deployment, from_attributes=True)


@router.get("/models", response_model=list[ModelOut])
async def list_models(
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    name: Annotated[str | None, Query(max_length=100)] = None,
    limit: Limit = 100,
) -> list[ModelOut]:
    """Registered models, newest first; `name` narrows to the versions of one model."""
    models = await DeployerRepository(uow.session, principal.tenant_id).list_models(name, limit)
    return [ModelOut.model_validate(m, from_attributes=True) for m in models]


@router.get("/models/{model_id}", response_model=ModelOut)
async def get_model(
    model_id: uuid.UUID, uow: UnitOfWorkDep, principal: CurrentPrincipal
) -> ModelOut:
    """One registered model version."""
    model = await DeployerRepository(uow.session, principal.tenant_id).get_model(model_id)
    if model is None:
        raise NotFound(f"no model {model_id}")
    return ModelOut.model_validate(model, from_attributes=True)


@router.post("/deployments", response_model=DeploymentOut, status_code=status.HTTP_201_CREATED)
async def create_deployment(
    body: DeploymentCreate, context: DeployerContextDep, principal: CurrentPrincipal
) -> DeploymentOut:
    """Serve a registered model (again): start, check, then retire the name's previous one."""
    try:
        outcome = await context.state.deployer.deploy(
            principal.tenant_id, body.model_id, port=body.port
        )
    except PortUnavailable as exc:
        raise Conflict([{"field": "port", "message": str(exc)}]) from exc
    if not outcome.succeeded:
        raise NexusError(
            {"deployment_id": str(outcome.deployment.id), "reason": outcome.reason},
            error="deployment_failed",
            status_code=502,
        )
    return _out(outcome.deployment)


@router.get("/deployments", response_model=list[DeploymentOut])
async def list_deployments(
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    status: DeploymentStatus | None = None,
    model_id: uuid.UUID | None = None,
    limit: Limit = 100,
) -> list[DeploymentOut]:
    """Deployments, newest first, optionally by status or model."""
    repo = DeployerRepository(uow.session, principal.tenant_id)
    return [_out(d) for d in await repo.list_deployments(status, model_id, limit)]


@router.get("/deployments/{deployment_id}", response_model=DeploymentOut)
async def get_deployment(
    deployment_id: uuid.UUID, uow: UnitOfWorkDep, principal: CurrentPrincipal
) -> DeploymentOut:
    """One deployment: where it serves, its process, and what its smoke test measured."""
    repo = DeployerRepository(uow.session, principal.tenant_id)
    deployment = await repo.get_deployment(deployment_id)
    if deployment is None:
        raise NotFound(f"no deployment {deployment_id}")
    return _out(deployment)


@router.post("/deployments/{deployment_id}/rollback", response_model=DeploymentOut)
async def rollback_deployment(
    deployment_id: uuid.UUID, context: DeployerContextDep, principal: CurrentPrincipal
) -> DeploymentOut:
    """Stop this deployment and serve the one it replaced again, on the same port."""
    return _out(await context.state.deployer.rollback(principal.tenant_id, deployment_id))


@router.delete("/deployments/{deployment_id}", response_model=DeploymentOut)
async def stop_deployment(
    deployment_id: uuid.UUID, context: DeployerContextDep, principal: CurrentPrincipal
) -> DeploymentOut:
    """Stop a running deployment (its record is kept, with status `stopped`)."""
    return _out(await context.state.deployer.stop(principal.tenant_id, deployment_id))
