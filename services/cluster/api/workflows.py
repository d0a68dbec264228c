"""HTTP routes for workflows: submit one (phase 1 runs in the request), follow its status,
stream its changes, and download its generated project."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from services.cluster.repository import WorkflowRepository
from services.cluster.schemas import WorkflowOut
from services.cluster.service.admission import check_quotas, queue_positions
from services.cluster.service.datasets import resolve_dataset
from services.cluster.service.project_archive import build_bundle
from services.cluster.service.setup import retry_spec, set_up_workflow
from services.cluster.service.status import TERMINAL, workflow_out
from services.cluster.state import ClusterContext, ClusterContextDep
from shared.db import UnitOfWork
from shared.errors import Conflict, NotFound
from shared.security import CurrentPrincipal
from shared.service_app import UnitOfWorkDep
from shared.spec import RetryRequest, WorkflowSpec

router = APIRouter(prefix="/workflows", tags=["workflows"])

WorkflowId = Annotated[uuid.UUID, Path(description="The workflow's id.")]
# A follower is woken by the workflow's NOTIFY; with none, it reads and (when nothing
# changed) sends a keep-alive this often.
SSE_KEEPALIVE_S = 15.0


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=WorkflowOut)
async def submit_workflow(
    spec: WorkflowSpec, uow: UnitOfWorkDep, principal: CurrentPrincipal, context: ClusterContextDep
) -> WorkflowOut:
    """Submit a workflow spec: phase 1 (setup) runs now, the other phases follow by events.
    429 when the tenant's quotas are used up."""
    return await _admit(spec, uow, principal.tenant_id, context)


@router.post(
    "/{workflow_id}/retry", status_code=status.HTTP_202_ACCEPTED, response_model=WorkflowOut
)
async def retry_workflow(
    workflow_id: WorkflowId,
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    context: ClusterContextDep,
    changes: RetryRequest | None = None,
) -> WorkflowOut:
    """Run a failed workflow again as a new one: its training goes on from the failed run's
    newest checkpoint, with the changes asked for (learning rate, clipping, epochs)."""
    repo = WorkflowRepository(uow.session, principal.tenant_id)
    failed = await repo.get(workflow_id)
    if failed is None:
        raise NotFound(f"no workflow {workflow_id}")
    if failed.status != "failed":
        raise Conflict(f"workflow {workflow_id} is {failed.status}: only a failed one is retried")
    spec = retry_spec(failed, await repo.phases_of(workflow_id), changes or RetryRequest())
    return await _admit(spec, uow, principal.tenant_id, context)


async def _admit(
    spec: WorkflowSpec, uow: UnitOfWork, tenant_id: str, context: ClusterContext
) -> WorkflowOut:
    """Within the tenant's quotas (else 429), record the workflow and run its phase 1."""
    spec = await resolve_dataset(spec, tenant_id, context)
    await check_quotas(context.settings, uow, tenant_id, spec.cluster.node_count, workflow=True)
    workflow, phases = await set_up_workflow(
        uow,
        context.artifacts,
        tenant_id,
        spec,
        uuid.uuid4(),
        heartbeat_interval_s=context.settings.heartbeat_interval_s,
    )
    return workflow_out(workflow, list(phases.values()))


@router.get("", response_model=list[WorkflowOut])
async def list_workflows(
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> list[WorkflowOut]:
    """The caller's workflows, newest first."""
    repo = WorkflowRepository(uow.session, principal.tenant_id)
    workflows = await repo.newest(limit)
    phases = await repo.phases([w.id for w in workflows])
    places = await queue_positions(uow.session, [w.status for w in workflows])
    return [workflow_out(w, phases[w.id], places.get(w.id)) for w in workflows]


@router.get("/{workflow_id}", response_model=WorkflowOut)
async def get_workflow(
    workflow_id: WorkflowId, uow: UnitOfWorkDep, principal: CurrentPrincipal
) -> WorkflowOut:
    """A workflow's status, phases, training progress and result."""
    repo = WorkflowRepository(uow.session, principal.tenant_id)
    workflow = await repo.get(workflow_id)
    if workflow is None:
        raise NotFound(f"no workflow {workflow_id}")
    places = await queue_positions(uow.session, [workflow.status])
    phases = (await repo.phases([workflow_id]))[workflow_id]
    return workflow_out(workflow, phases, places.get(workflow_id))


async def _snapshot(
    context: ClusterContext, tenant_id: str, workflow_id: uuid.UUID
) -> WorkflowOut | None:
    # A short session per poll: a long-lived stream must not hold a transaction open.
    async with context.sessionmaker() as session:
        repo = WorkflowRepository(session, tenant_id)
        workflow = await repo.get(workflow_id)
        if workflow is None:
            return None
        places = await queue_positions(session, [workflow.status])
        phases = (await repo.phases([workflow_id]))[workflow_id]
        return workflow_out(workflow, phases, places.get(workflow_id))


@router.get("/{workflow_id}/events", response_class=StreamingResponse)
async def workflow_events(
    workflow_id: WorkflowId,
    request: Request,
    principal: CurrentPrincipal,
    context: ClusterContextDep,
) -> StreamingResponse:
    """Server-Sent Events: the workflow's JSON each time it changes, until it finishes."""
    first = await _snapshot(context, principal.tenant_id, workflow_id)
    if first is None:
        raise NotFound(f"no workflow {workflow_id}")

    changes = context.state.changes

    async def stream() -> AsyncIterator[str]:
        with changes.follow(workflow_id) as changed:
            changed.set()  # it may have changed since `first` was read, before we followed
            current: WorkflowOut | None = first
            sent, quiet_since = "", time.monotonic()
            while current is not None:
                text = current.model_dump_json()
                if text != sent:
                    yield f"event: workflow\ndata: {text}\n\n"
                    sent, quiet_since = text, time.monotonic()
                elif time.monotonic() - quiet_since > SSE_KEEPALIVE_S:
                    yield ": keep-alive\n\n"  # proxies drop silent connections
                    quiet_since = time.monotonic()
                if current.status in TERMINAL or await request.is_disconnected():
                    return
                # Woken by the workflow's NOTIFY; read anyway now and then (a disconnect is
                # noticed then, and nothing is missed while the listener reconnects).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), changes.wait_s(SSE_KEEPALIVE_S))
                changed.clear()  # before the read: a change during it wakes the next wait
                current = await _snapshot(context, principal.tenant_id, workflow_id)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.get(
    "/{workflow_id}/bundle",
    response_class=Response,
    responses={200: {"content": {"application/gzip": {}}}},
)
async def workflow_bundle(
    workflow_id: WorkflowId,
    uow: UnitOfWorkDep,
    principal: CurrentPrincipal,
    context: ClusterContextDep,
) -> Response:
    """The workflow's generated project (configs, scripts, model, report) as a tar.gz."""
    workflow = await WorkflowRepository(uow.session, principal.tenant_id).get(workflow_id)
    if workflow is None:
        raise NotFound(f"no workflow {workflow_id}")
    data = await asyncio.to_thread(
        build_bundle, context.artifacts, principal.tenant_id, workflow_id
    )
    if data is None:
        raise NotFound(f"workflow {workflow_id} has no generated files")
    filename = f"{workflow.name}-{str(workflow_id)[:8]}.tar.gz"
    return Response(
        data,
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
