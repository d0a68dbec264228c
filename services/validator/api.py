"""HTTP routes of the validator service: a tenant's validations, their reports, re-runs."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse

from services.validator.models import OPEN_STATUSES, Validation
from services.validator.repository import ValidationRepository
from services.validator.schemas import ValidationCreate, ValidationListOut, ValidationOut
from services.validator.service import validate
from services.validator.service.nodes import ClusterUnreachable, NodeUnavailable, find_validator
from services.validator.state import ValidatorContext, ValidatorContextDep
from shared.errors import Conflict, NotFound, Unavailable, Unprocessable
from shared.ml.files import MODEL_METADATA
from shared.security import CurrentPrincipal
from shared.service_app import UnitOfWorkDep

router = APIRouter(prefix="/validations", tags=["validations"])

ValidationId = Annotated[uuid.UUID, Path(description="A validation id (UUID).")]
Status = Literal["queued", "running", "passed", "failed", "error"]


def _out(validation: Validation) -> ValidationOut:
    return ValidationOut.model_validate(validation, from_attributes=True)


@router.post("", response_model=ValidationOut, status_code=202)
async def request_validation(
    body: ValidationCreate, context: ValidatorContextDep, principal: CurrentPrincipal
) -> ValidationOut:
    """Re-validate a workflow's trained model on its cluster's validator node."""
    tenant = principal.tenant_id
    # Committed before the task goes out, so the node's report finds the row.
    async with context.unit_of_work() as uow:
        repository = ValidationRepository(uow.session, tenant)
        phase_run = await repository.latest_for_workflow(body.workflow_id)
        if phase_run is None:
            raise NotFound(f"workflow {body.workflow_id} has no validation to re-run")
        if await repository.open_for_workflow(body.workflow_id) is not None:
            raise Conflict(f"workflow {body.workflow_id} already has a validation in progress")
        model_uri = phase_run.model_uri
        if body.model_uri is not None:
            model_uri = await _owned_model(context, tenant, body.workflow_id, body.model_uri)
        try:
            node = await find_validator(context, tenant, phase_run.cluster_id, patience_s=0)
        except ClusterUnreachable as exc:
            raise Unavailable(str(exc)) from exc
        except NodeUnavailable as exc:
            raise Conflict(str(exc)) from exc
        validation = await repository.create(
            workflow_id=body.workflow_id,
            cluster_id=phase_run.cluster_id,
            trigger="manual",
            model_uri=model_uri,
            spec=phase_run.spec,
            gates=phase_run.gates,
        )
    node_id, error = await validate.send_validate_task(context, validation, node)
    async with context.unit_of_work() as uow:
        await validate.record_dispatch(uow, validation.id, node_id, error)
        started = await ValidationRepository(uow.session, tenant).get(validation.id)
    if error is not None:
        raise Unavailable(f"validation {validation.id} could not start: {error}")
    assert started is not None, "the validation was committed above"
    return _out(started)


async def _owned_model(
    context: ValidatorContext, tenant: str, workflow_id: uuid.UUID, model_uri: str
) -> str:
    # Only a model inside the tenant's own workflow artifacts may be loaded by a node.
    prefix = context.artifacts.workflow_url(tenant, workflow_id) + "/"
    inside = model_uri[len(prefix) :].strip("/")
    if not model_uri.startswith(prefix) or not inside or ".." in inside.split("/"):
        raise Unprocessable(
            [{"field": "model_uri", "message": f"must be a model folder under {prefix}"}]
        )
    metadata = f"{prefix}{inside}/{MODEL_METADATA}"
    if not await asyncio.to_thread(context.artifacts.exists, metadata):
        raise Unprocessable(
            [{"field": "model_uri", "message": f"no saved model there ({MODEL_METADATA})"}]
        )
    return f"{prefix}{inside}"


@router.get("", response_model=ValidationListOut)
async def list_validations(
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    workflow_id: uuid.UUID | None = None,
    status: Status | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ValidationListOut:
    """The tenant's validations, newest first, optionally of one workflow or status."""
    found = await ValidationRepository(uow.session, principal.tenant_id).list(
        workflow_id, status, limit
    )
    return ValidationListOut(validations=[_out(v) for v in found])


async def _get(uow: UnitOfWorkDep, principal: CurrentPrincipal, id_: uuid.UUID) -> Validation:
    validation = await ValidationRepository(uow.session, principal.tenant_id).get(id_)
    if validation is None:
        raise NotFound(f"no validation {id_}")
    return validation


@router.get("/{validation_id}", response_model=ValidationOut)
async def get_validation(
    validation_id: ValidationId, uow: UnitOfWorkDep, principal: CurrentPrincipal
) -> ValidationOut:
    """One validation with its gates and measured results."""
    return _out(await _get(uow, principal, validation_id))


@router.get(
    "/{validation_id}/report",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/markdown": {}}}},
)
async def get_report(
    validation_id: ValidationId,
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    context: ValidatorContextDep,
) -> PlainTextResponse:
    """The validation's performance report, as markdown."""
    validation = await _get(uow, principal, validation_id)
    if validation.status in OPEN_STATUSES:
        raise Conflict(f"validation {validation_id} is {validation.status}; no report yet")
    if validation.report_uri is None:
        raise NotFound(f"validation {validation_id} ended in error: {validation.error}")
    try:
        text = await asyncio.to_thread(context.artifacts.read_text, validation.report_uri)
    except FileNotFoundError as exc:
        raise NotFound(f"the report of validation {validation_id} is gone") from exc
    return PlainTextResponse(text, media_type="text/markdown")
