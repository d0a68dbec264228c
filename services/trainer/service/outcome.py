"""Phase 3, progress and end: store epoch rows, gate the finished run, complete the phase."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from services.trainer.models import FINISHED_STATUSES, TrainingJob
from services.trainer.repository import TrainerRepository
from services.trainer.service.project_files import write_backup_script
from services.trainer.service.train import monitoring
from shared.artifacts import ArtifactStore
from shared.contracts import (
    EpochReport,
    MemoryWritten,
    Phase3Completed,
    PhaseFailed,
    TrainArtifacts,
    TrainingFinished,
    TrainingProgress,
    TrainResult,
)
from shared.db import SYSTEM, UnitOfWork
from shared.ml.files import CHECKPOINT_FILES, MODEL_FILES
from shared.phases import PhaseError
from shared.project_layout import MemoryKey
from shared.service_app import AnyContext
from shared.spec import WorkflowSpec

logger = logging.getLogger(__name__)

# The fields of one epoch's row (a progress event carries them and the job's ids).
EPOCH_FIELDS = frozenset(EpochReport.model_fields)


async def _own_job(
    uow: UnitOfWork, event: TrainingProgress | TrainingFinished, *, for_update: bool = False
) -> TrainingJob | None:
    job = await TrainerRepository(uow.session, SYSTEM).get_job(event.job_id, for_update=for_update)
    # The tenant on the row is the truth; an event naming another tenant is not this job's.
    if job is None or job.tenant_id != event.tenant_id:
        logger.warning("%s for unknown job %s ignored", type(event).__name__, event.job_id)
        return None
    return job


async def record_progress(uow: UnitOfWork, event: TrainingProgress) -> None:
    # Locked before its epoch is inserted, as the finished event's handler does (see
    # TrainerRepository): the two may run at once after a restart's backlog.
    job = await _own_job(uow, event, for_update=True)
    if job is None:
        return
    repository = TrainerRepository(uow.session, job.tenant_id)
    await repository.record_epochs(job.id, [event.model_dump(include=set(EPOCH_FIELDS))])
    # The node's reply to the dispatch may still be on its way; progress proves it runs.
    await repository.mark_started(job.id)


def missing_files(store: ArtifactStore, model_uri: str, checkpoints: list[str]) -> list[str]:
    wanted = [f"{model_uri.rstrip('/')}/{name}" for name in MODEL_FILES]
    for checkpoint in checkpoints:
        wanted += [f"{checkpoint.rstrip('/')}/{name}" for name in CHECKPOINT_FILES]
    return [url for url in wanted if not store.exists(url)]


async def phase3_gate_failures(
    artifacts: ArtifactStore, job: TrainingJob, result: TrainResult
) -> list[str]:
    """Converged, per-epoch metrics reported (the caller stores them), the model and the
    checkpoints in the store."""
    failures = []
    if not result.converged:
        reason = f"training did not converge: {result.convergence_reason}"
        suggestion = retry_suggestion(job, result)
        if suggestion is not None:
            reason += f"; {suggestion}"
        failures.append(reason)
    if not result.history:
        failures.append("per-epoch metrics were not stored")
    expected = TrainArtifacts.model_validate(job.config["artifacts"])
    prefix = expected.checkpoints.rstrip("/") + "/"
    checkpoints = result.checkpoints
    if result.model_uri != expected.models or not all(c.startswith(prefix) for c in checkpoints):
        failures.append("the node reported files outside the workflow's artifact folder")
    elif not checkpoints:
        failures.append("no checkpoints were saved")
    else:
        missing = await asyncio.to_thread(missing_files, artifacts, expected.models, checkpoints)
        if missing:
            failures.append(f"missing from the artifact store: {', '.join(missing)}")
    return failures


def suggested_changes(job: TrainingJob, result: TrainResult) -> dict[str, float] | None:
    """For a run that diverged: a tenth of its learning rate, and clipping if it had none."""
    if not (result.convergence_reason or "").startswith("diverged"):
        return None
    training = job.config["spec"]["training"]
    changes = {"learning_rate": training["learning_rate"] / 10}
    if training.get("grad_clip_norm") is None:
        changes["grad_clip_norm"] = 1.0
    return changes


def retry_suggestion(job: TrainingJob, result: TrainResult) -> str | None:
    changes = suggested_changes(job, result)
    if changes is None:
        return None
    flags = " ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in changes.items())
    return (
        f"to go on from its best epoch with a smaller step: nexus workflow retry "
        f"{job.workflow_id} {flags} (or POST /workflows/{job.workflow_id}/retry)"
    )


async def finish_training(context: AnyContext, uow: UnitOfWork, event: TrainingFinished) -> None:
    """Store the run's epochs, apply phase 3's gate and complete the phase; a failure is
    raised as PhaseError (the runner reports it, `record_failure` closes the job)."""
    result = event.result
    job = await _own_job(uow, event, for_update=True)
    if job is None or job.status in ("succeeded", "failed"):
        return
    if superseded(job, event.attempt):
        return  # a rank of an attempt that a recovery replaced
    repository = TrainerRepository(uow.session, job.tenant_id)
    await repository.record_epochs(job.id, result.history_dicts())
    if job.status == "cancelled":
        # Its PhaseFailed went out with the cancel; keep what the run saved until then (the
        # lead writes the checkpoints; another rank's report has none).
        if event.node_id == job.node_id:
            job.checkpoints = result.checkpoints
        return
    if not event.succeeded:
        raise PhaseError(f"training failed on node {event.node_id}: {event.error}")
    failures = await phase3_gate_failures(context.artifacts, job, result)
    if failures:
        details: dict[str, Any] = {"failed_gates": failures}
        changes = suggested_changes(job, result)
        if changes is not None:
            details["suggested_retry"] = {"training": changes}
        raise PhaseError("; ".join(failures), details)
    await _complete_phase3(context, uow, repository, job, result)


def superseded(job: TrainingJob, attempt: int) -> bool:
    """Whether a report of `attempt` is of a run a recovery replaced (or is replacing: while
    the job waits for a replacement node, its broken attempt is still the current one)."""
    current = job.config.get("attempt", 0)
    return attempt < current or (attempt == current and bool(job.config.get("awaiting")))


async def record_failure(uow: UnitOfWork, event: TrainingFinished, reason: str) -> None:
    job = await _own_job(uow, event, for_update=True)
    if job is not None and job.status not in FINISHED_STATUSES:
        repository = TrainerRepository(uow.session, job.tenant_id)
        await repository.record_epochs(job.id, event.result.history_dicts())
        await repository.finish_job(job, "failed", metrics=event.result.metrics(), error=reason)


async def close_jobs_of_failed_phase(uow: UnitOfWork, event: PhaseFailed) -> None:
    """Phase 3 failed elsewhere (its deadline passed, an event was dead-lettered): a job still
    open is failed with that reason; the cluster stops its nodes."""
    repository = TrainerRepository(uow.session, event.tenant_id)
    for job in await repository.unfinished_jobs_of(event.workflow_id):
        logger.warning("training job %s failed: %s", job.id, event.reason)
        await repository.finish_job(job, "failed", error=event.reason)


async def _complete_phase3(
    context: AnyContext,
    uow: UnitOfWork,
    repository: TrainerRepository,
    job: TrainingJob,
    result: TrainResult,
) -> None:
    assert result.model_uri is not None, "the gate checked the model's files"
    metrics = result.metrics()
    backup_url = await asyncio.to_thread(
        write_backup_script,
        context.artifacts,
        job.tenant_id,
        job.workflow_id,
        job.id,
        len(result.checkpoints),
    )
    await repository.finish_job(
        job,
        "succeeded",
        metrics=metrics,
        model_uri=result.model_uri,
        checkpoints=result.checkpoints,
    )
    spec = WorkflowSpec.model_validate(job.config["spec"])
    started, finished = job.started_at, job.finished_at
    wall = (finished - started).total_seconds() if started and finished else None
    follow = monitoring(
        context.settings.trainer_url, job.id, job.node_id, spec.training.epochs, wall
    )
    await uow.emit(
        MemoryWritten(
            workflow_id=job.workflow_id,
            tenant_id=job.tenant_id,
            keys={
                MemoryKey.TRAINING_JOB_ID: str(job.id),
                MemoryKey.TRAINING_METRICS: {
                    "final": result.final.model_dump() if result.final else None,
                    "history": result.history_dicts(),
                    **{k: v for k, v in metrics.items() if k not in EPOCH_FIELDS},
                },
                MemoryKey.MONITORING: follow,
                MemoryKey.PHASE3_COMPLETE: {
                    "completed_at": job.finished_at.isoformat() if job.finished_at else None,
                    "job_id": str(job.id),
                    "model_uri": result.model_uri,
                    "checkpoints": result.checkpoints,
                    "backup_script": backup_url,
                },
            },
        )
    )
    await uow.emit(
        Phase3Completed(
            workflow_id=job.workflow_id,
            tenant_id=job.tenant_id,
            job_id=job.id,
            model_uri=result.model_uri,
            metrics=metrics,
            spec=spec,
            cluster_id=job.cluster_id,
        )
    )
