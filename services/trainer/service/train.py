"""Phase 3, start: create the training job and hand the `train` task to worker rank 0.

The job is committed before the task is sent, so the node's first progress event always
finds its row; the task request happens outside any transaction (it may wait seconds)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from services.trainer.repository import TrainerRepository
from services.trainer.service.design import worker_rank_zero
from shared.contracts import (
    MemoryWritten,
    Phase2Completed,
    TrainArtifacts,
    TrainingProgress,
    TrainTask,
)
from shared.db import UnitOfWork
from shared.node_tasks import TaskNotStarted, send_node_task
from shared.phases import PhaseError, fail_phase
from shared.project_layout import MemoryKey
from shared.service_app import AnyContext

logger = logging.getLogger(__name__)


async def create_job(
    context: AnyContext, uow: UnitOfWork, event: Phase2Completed
) -> tuple[TrainTask, str]:
    """The job's row and the task for worker rank 0 (sent once this unit commits)."""
    worker = worker_rank_zero(event.nodes)
    if worker is None:
        raise PhaseError("no worker node in the cluster to train on")
    task = TrainTask(
        job_id=uuid.uuid4(),
        workflow_id=event.workflow_id,
        tenant_id=event.tenant_id,
        cluster_id=event.cluster_id,
        spec=event.spec,
        architecture=event.architecture,
        artifacts=TrainArtifacts.for_workflow(
            context.artifacts, event.tenant_id, event.workflow_id
        ),
    )
    await TrainerRepository(uow.session, event.tenant_id).create_job(
        task.job_id,
        event.workflow_id,
        event.cluster_id,
        worker.node_id,
        config={
            "spec": event.spec.model_dump(mode="json"),
            "architecture": event.architecture,
            "artifacts": task.artifacts.model_dump(),
            "strategy": event.spec.training.strategy,
        },
    )
    # How to follow the job while it trains; written again when the phase completes.
    follow = monitoring(
        context.settings.trainer_url, task.job_id, worker.node_id, event.spec.training.epochs
    )
    await uow.emit(
        MemoryWritten(
            workflow_id=event.workflow_id,
            tenant_id=event.tenant_id,
            keys={MemoryKey.TRAINING_JOB_ID: str(task.job_id), MemoryKey.MONITORING: follow},
        )
    )
    return task, worker.node_id


async def send_train_task(context: AnyContext, task: TrainTask, node_id: str) -> str | None:
    """Hand the task to its node; None once accepted, else why it did not start."""
    try:
        await send_node_task(
            context, node_id, str(task.job_id), "train", task.model_dump(mode="json")
        )
    except TaskNotStarted as exc:
        return str(exc)
    return None


async def record_dispatch(
    uow: UnitOfWork, task: TrainTask, node_id: str, error: str | None
) -> None:
    repository = TrainerRepository(uow.session, task.tenant_id)
    if error is None:
        await repository.mark_started(task.job_id)
        return
    logger.warning("training job %s not started: %s", task.job_id, error)
    await repository.mark_dispatch_failed(task.job_id, error)
    await fail_phase(
        uow,
        3,
        task.workflow_id,
        task.tenant_id,
        f"training could not start: {error}",
        {"job_id": str(task.job_id), "node_id": node_id},
    )


def monitoring(
    trainer_url: str,
    job_id: uuid.UUID,
    node_id: str | None,
    epochs: int,
    wall_seconds: float | None = None,
) -> dict[str, Any]:
    """How to follow a job: its HTTP metrics, the progress subject, and how long it took."""
    base = trainer_url.rstrip("/")
    return {
        "job_id": str(job_id),
        "node_id": node_id,
        "job_url": f"{base}/jobs/{job_id}",
        "metrics_url": f"{base}/jobs/{job_id}/metrics",
        "progress_subject": TrainingProgress.subject,
        "epochs": epochs,
        "wall_seconds": wall_seconds,
    }
