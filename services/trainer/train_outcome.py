"""Phase 3, progress and end: store epoch rows, gate the finished run, complete the phase."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from services.trainer.models import FINISHED_STATUSES, TrainingJob
from services.trainer.phase_runner import PhaseError, run_phase_step
from services.trainer.project_files import write_backup_script
from services.trainer.repository import TrainerRepository
from services.trainer.task_payload import PROGRESS_SUBJECT
from shared.artifacts import ArtifactStore
from shared.db import UnitOfWork
from shared.events import Phase3Completed, TrainingFinished, TrainingProgress
from shared.ml.files import CHECKPOINT_FILES, MODEL_FILES
from shared.service_app import ServiceContext

logger = logging.getLogger(__name__)

PROGRESS_CONSUMER = "trainer-progress"
FINISHED_CONSUMER = "trainer-finished"

EPOCH_FIELDS = {
    "epoch",
    "epochs",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "seconds",
}


async def _own_job(
    repository: TrainerRepository,
    event: TrainingProgress | TrainingFinished,
    *,
    for_update: bool = False,
) -> TrainingJob | None:
    job = await repository.get_job(event.job_id, for_update=for_update)
    # The tenant on the row is the truth; an event naming another tenant is not this job's.
    if job is None or job.tenant_id != event.tenant_id:
        logger.warning("%s for unknown job %s ignored", type(event).__name__, event.job_id)
        return None
    return job


async def on_training_progress(context: ServiceContext, event: TrainingProgress) -> None:
    async with context.unit_of_work() as uow:
        if not await uow.first_time(PROGRESS_CONSUMER, event.event_id):
            return
        repository = TrainerRepository(uow.session, None)
        job = await _own_job(repository, event)
        if job is None:
            return
        await repository.record_epochs(job.id, [event.model_dump(include=EPOCH_FIELDS)])
        # The node's reply to the dispatch may still be on its way; progress proves it runs.
        await repository.mark_started(job.id)


def missing_files(store: ArtifactStore, model_uri: str, checkpoints: list[str]) -> list[str]:
    wanted = [f"{model_uri.rstrip('/')}/{name}" for name in MODEL_FILES]
    for checkpoint in checkpoints:
        wanted += [f"{checkpoint.rstrip('/')}/{name}" for name in CHECKPOINT_FILES]
    return [url for url in wanted if not store.exists(url)]


async def phase3_gate_failures(
    context: ServiceContext, job: TrainingJob, result: dict[str, Any]
) -> list[str]:
    """Converged, per-epoch metrics reported (the caller stores them), the model and the
    checkpoints in the store."""
    failures = []
    if not result.get("converged"):
        failures.append(f"training did not converge: {result.get('convergence_reason')}")
    if not result.get("history"):
        failures.append("per-epoch metrics were not stored")
    expected = job.config["artifacts"]
    model_uri, checkpoints = result.get("model_uri"), result.get("checkpoints") or []
    prefix = expected["checkpoints"].rstrip("/") + "/"
    if model_uri != expected["models"] or not all(c.startswith(prefix) for c in checkpoints):
        failures.append("the node reported files outside the workflow's artifact folder")
    elif not checkpoints:
        failures.append("no checkpoints were saved")
    else:
        missing = await asyncio.to_thread(missing_files, context.artifacts, model_uri, checkpoints)
        if missing:
            failures.append(f"missing from the artifact store: {', '.join(missing)}")
    return failures


def _metrics(result: dict[str, Any]) -> dict[str, Any]:
    """The last epoch's measurements plus the run's summary (the job row, Phase3Completed)."""
    keys = ("converged", "convergence_reason", "converged_epoch", "best_epoch", "best_val_loss")
    final = {k: v for k, v in (result.get("final") or {}).items() if k != "seconds"}
    return {
        **final,
        **{k: result.get(k) for k in keys},
        "epochs_run": result.get("epochs_run", len(result.get("history") or [])),
        "training_seconds": result.get("seconds"),
    }


def monitoring(
    context: ServiceContext,
    job_id: uuid.UUID,
    node_id: str | None,
    epochs: int,
    wall_seconds: float | None,
) -> dict[str, Any]:
    """How to follow a job: its HTTP metrics, the progress subject, and how long it took."""
    base = context.settings.trainer_url.rstrip("/")
    return {
        "job_id": str(job_id),
        "node_id": node_id,
        "job_url": f"{base}/jobs/{job_id}",
        "metrics_url": f"{base}/jobs/{job_id}/metrics",
        "progress_subject": PROGRESS_SUBJECT,
        "epochs": epochs,
        "wall_seconds": wall_seconds,
    }


async def on_training_finished(context: ServiceContext, event: TrainingFinished) -> None:
    result = event.result  # a NaN sent by the node arrives as None: JSON has no NaN

    async def complete(uow: UnitOfWork) -> None:
        repository = TrainerRepository(uow.session, None)
        job = await _own_job(repository, event, for_update=True)
        if job is None or job.status in ("succeeded", "failed"):
            return
        await repository.record_epochs(job.id, result.get("history") or [])
        if job.status == "cancelled":
            # Its PhaseFailed went out with the cancel; keep what the run saved until then.
            job.checkpoints = result.get("checkpoints") or []
            return
        if not event.succeeded:
            raise PhaseError(f"training failed on node {event.node_id}: {event.error}")
        failures = await phase3_gate_failures(context, job, result)
        if failures:
            raise PhaseError("; ".join(failures), {"failed_gates": failures})
        await finish_successfully(context, uow, repository, job, result)

    async def record_failure(uow: UnitOfWork, reason: str) -> None:
        repository = TrainerRepository(uow.session, None)
        job = await _own_job(repository, event, for_update=True)
        if job is not None and job.status not in FINISHED_STATUSES:
            await repository.record_epochs(job.id, result.get("history") or [])
            await repository.finish_job(job, "failed", metrics=_metrics(result), error=reason)

    await run_phase_step(context, event, FINISHED_CONSUMER, 3, complete, record_failure)


async def finish_successfully(
    context: ServiceContext,
    uow: UnitOfWork,
    repository: TrainerRepository,
    job: TrainingJob,
    result: dict[str, Any],
) -> None:
    checkpoints: list[str] = result["checkpoints"]
    metrics = _metrics(result)
    backup_url = await asyncio.to_thread(
        write_backup_script,
        context.artifacts,
        job.tenant_id,
        job.workflow_id,
        job.id,
        len(checkpoints),
    )
    await repository.finish_job(
        job, "succeeded", metrics=metrics, model_uri=result["model_uri"], checkpoints=checkpoints
    )
    started, finished = job.started_at, job.finished_at
    wall = (finished - started).total_seconds() if started and finished else None
    await context.memory.put_many(
        job.tenant_id,
        str(job.workflow_id),
        {
            "neural/training-job-id": str(job.id),
            "neural/training-metrics": {
                "final": result.get("final"),
                "history": result.get("history"),
                **{k: v for k, v in metrics.items() if k not in EPOCH_FIELDS},
            },
            "neural/monitoring": monitoring(
                context, job.id, job.node_id, job.config["spec"]["training"]["epochs"], wall
            ),
            "neural/phase3-complete": {
                "completed_at": datetime.now(UTC).isoformat(),
                "job_id": str(job.id),
                "model_uri": result["model_uri"],
                "checkpoints": checkpoints,
                "backup_script": backup_url,
            },
        },
    )
    await uow.emit(
        Phase3Completed(
            workflow_id=job.workflow_id,
            tenant_id=job.tenant_id,
            job_id=job.id,
            model_uri=result["model_uri"],
            metrics=metrics,
            spec=job.config["spec"],
            cluster_id=job.cluster_id,
            nodes=job.config.get("nodes", []),
        )
    )
