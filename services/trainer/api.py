"""HTTP routes of the trainer service: training jobs and their metrics (datasets have their
own routes, in dataset_routes.py)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Path, Query, status
from fastapi.responses import JSONResponse

from services.trainer.models import FINISHED_STATUSES, TrainingJob
from services.trainer.repository import TrainerRepository
from services.trainer.schemas import (
    CancelOut,
    EpochOut,
    JobListOut,
    JobMetricsOut,
    JobOut,
    JobStatus,
)
from services.trainer.state import TrainerContextDep
from shared.errors import Conflict, NotFound, Unavailable
from shared.node_tasks import TaskNotStarted, send_node_task
from shared.phases import fail_phase
from shared.security import CurrentPrincipal, internal_headers
from shared.service_app import UnitOfWorkDep
from shared.spec import RetryRequest

router = APIRouter(tags=["trainer"])

JobId = Annotated[uuid.UUID, Path(description="A training job id.")]


def _repository(uow: UnitOfWorkDep, principal: CurrentPrincipal) -> TrainerRepository:
    return TrainerRepository(uow.session, principal.tenant_id)


async def _job(repository: TrainerRepository, job_id: uuid.UUID, **kwargs: Any) -> TrainingJob:
    job = await repository.get_job(job_id, **kwargs)
    if job is None:
        raise NotFound(f"no training job {job_id}")
    return job


def _out(job: TrainingJob) -> JobOut:
    out = JobOut.model_validate(job, from_attributes=True)
    return out.model_copy(update={"recoveries": job.config.get("recoveries", [])})


@router.get("/jobs", response_model=JobListOut)
async def list_jobs(
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    workflow_id: Annotated[uuid.UUID | None, Query(description="Only this workflow's")] = None,
    status: Annotated[JobStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobListOut:
    """List the tenant's training jobs, newest first."""
    jobs = await _repository(uow, principal).list_jobs(workflow_id, status, limit)
    return JobListOut(jobs=[_out(job) for job in jobs])


@router.get("/jobs/{job_id}", response_model=JobOut)
async def get_job(job_id: JobId, uow: UnitOfWorkDep, principal: CurrentPrincipal) -> JobOut:
    """One training job: status, node, configuration, final metrics, model and checkpoints."""
    return _out(await _job(_repository(uow, principal), job_id))


@router.get("/jobs/{job_id}/metrics", response_model=JobMetricsOut)
async def job_metrics(
    job_id: JobId, uow: UnitOfWorkDep, principal: CurrentPrincipal
) -> JobMetricsOut:
    """The job's per-epoch metrics, in epoch order."""
    repository = _repository(uow, principal)
    job = await _job(repository, job_id)
    epochs = await repository.epochs(job.id)
    return JobMetricsOut(
        job_id=job.id,
        status=job.status,  # type: ignore[arg-type]
        epochs=[EpochOut.model_validate(e, from_attributes=True) for e in epochs],
    )


@router.post("/jobs/{job_id}/cancel", response_model=CancelOut)
async def cancel_job(
    job_id: JobId, uow: UnitOfWorkDep, principal: CurrentPrincipal, context: TrainerContextDep
) -> CancelOut:
    """Cancel a queued or running job: the worker stops after its current epoch."""
    repository = _repository(uow, principal)
    job = await _job(repository, job_id, for_update=True)
    if job.status in FINISHED_STATUSES:
        raise Conflict(f"job {job_id} already finished ({job.status}); nothing to cancel")
    notified, detail = False, "the job had no node yet"
    if job.node_id:
        try:
            # Naming the task makes a node that has moved on to another one refuse instead.
            payload = {"task_id": str(job.id)}
            reply = await send_node_task(context, job.node_id, str(job.id), "cancel", payload)
            notified, detail = True, f"node {job.node_id} stops: {reply}"
        except TaskNotStarted as exc:
            detail = str(exc)
    # Cancelled either way: a node that cannot be reached is not training for us any more.
    await repository.finish_job(job, "cancelled", error=f"cancelled by request; {detail}")
    await fail_phase(
        uow,
        3,
        job.workflow_id,
        job.tenant_id,
        "the training job was cancelled",
        {"job_id": str(job.id), "node_notified": notified},
    )
    return CancelOut(job=_out(job), node_notified=notified, detail=detail)


@router.post("/jobs/{job_id}/resume", status_code=status.HTTP_202_ACCEPTED)
async def resume_job(
    job_id: JobId,
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    context: TrainerContextDep,
    changes: RetryRequest | None = None,
) -> JSONResponse:
    """Resume a failed or cancelled job from its newest checkpoint, optionally with a new
    learning rate, clipping or epochs: its workflow is retried as a new one (the cluster
    service's `POST /workflows/{id}/retry`), which is returned."""
    job = await _job(_repository(uow, principal), job_id)
    if job.status not in ("failed", "cancelled"):
        raise Conflict(f"job {job_id} is {job.status}: only a failed or cancelled job resumes")
    url = f"{context.settings.cluster_url.rstrip('/')}/workflows/{job.workflow_id}/retry"
    headers = internal_headers(context.settings.internal_token_value(), job.tenant_id)
    body = (changes or RetryRequest()).model_dump(mode="json", exclude_none=True)
    try:
        answer = await context.http.post(url, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise Unavailable(f"the cluster service could not be reached: {exc!r}") from exc
    # The cluster's answer as it is: the new workflow, or why not (a quota, a bad change).
    return JSONResponse(answer.json(), status_code=answer.status_code)
