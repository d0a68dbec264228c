"""Phase 3, start: create the training job and hand the `train` task to worker rank 0."""

from __future__ import annotations

import logging
import uuid

from services.trainer.configure import parse_spec
from services.trainer.design import worker_rank_zero
from services.trainer.node_dispatch import NodeUnreachable, send_task
from services.trainer.phase_runner import PhaseError, run_phase_step
from services.trainer.repository import TrainerRepository
from services.trainer.task_payload import TrainArtifacts, TrainTaskPayload
from services.trainer.train_outcome import monitoring
from shared.db import UnitOfWork
from shared.events import Phase2Completed, PhaseFailed
from shared.service_app import ServiceContext

logger = logging.getLogger(__name__)

CONSUMER = "trainer-train"


async def on_phase2_completed(context: ServiceContext, event: Phase2Completed) -> None:
    prepared: list[tuple[TrainTaskPayload, str]] = []  # filled by the step: (task, node id)

    async def create_job(uow: UnitOfWork) -> None:
        spec = parse_spec(event.spec)
        worker = worker_rank_zero(event.nodes)
        if worker is None:
            raise PhaseError("no worker node in the cluster to train on")
        job_id = uuid.uuid4()
        payload = TrainTaskPayload(
            job_id=job_id,
            workflow_id=event.workflow_id,
            tenant_id=event.tenant_id,
            cluster_id=event.cluster_id,
            spec=spec,
            architecture=event.architecture,
            artifacts=TrainArtifacts.for_workflow(
                context.artifacts, event.tenant_id, event.workflow_id
            ),
        )
        await TrainerRepository(uow.session, event.tenant_id).create_job(
            job_id,
            event.workflow_id,
            event.tenant_id,
            event.cluster_id,
            worker.node_id,
            config={
                "spec": spec.model_dump(mode="json"),
                "architecture": event.architecture,
                "artifacts": payload.artifacts.model_dump(),
                "strategy": spec.training.strategy,
                "nodes": [node.model_dump() for node in event.nodes],
            },
        )
        prepared.append((payload, worker.node_id))

    # The job is committed before the task is sent, so the node's first progress event
    # always finds its row.
    if await run_phase_step(context, event, CONSUMER, 3, create_job):
        # Announced before the task is sent, so the final keys written at completion win.
        payload, node_id = prepared[0]
        await announce_job(context, payload, node_id)
        await dispatch(context, payload, node_id)


async def dispatch(context: ServiceContext, payload: TrainTaskPayload, node_id: str) -> None:
    try:
        reply = await send_task(
            context, node_id, str(payload.job_id), "train", payload.model_dump(mode="json")
        )
        error = None if reply.get("accepted") is True else f"node {node_id} refused: {reply}"
    except NodeUnreachable as exc:
        error = str(exc)
    async with context.unit_of_work() as uow:
        repository = TrainerRepository(uow.session, payload.tenant_id)
        if error is None:
            await repository.mark_started(payload.job_id)
        else:
            logger.warning("training job %s not started: %s", payload.job_id, error)
            await repository.mark_dispatch_failed(payload.job_id, error)
            await uow.emit(
                PhaseFailed(
                    phase=3,
                    reason=f"training could not start: {error}",
                    details={"job_id": str(payload.job_id), "node_id": node_id},
                    workflow_id=payload.workflow_id,
                    tenant_id=payload.tenant_id,
                )
            )


async def announce_job(context: ServiceContext, payload: TrainTaskPayload, node_id: str) -> None:
    """Tell the workflow's memory how to follow the job while it trains (best effort: the
    keys are written again when the phase completes)."""
    follow = monitoring(
        context, payload.job_id, node_id, payload.spec.training.epochs, wall_seconds=None
    )
    try:
        await context.memory.put_many(
            payload.tenant_id,
            str(payload.workflow_id),
            {"neural/training-job-id": str(payload.job_id), "neural/monitoring": follow},
        )
    except Exception:
        logger.warning(
            "could not write the monitoring keys of job %s", payload.job_id, exc_info=True
        )
