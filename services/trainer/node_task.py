"""The `train` task, run inside a worker node process (see shared/node_tasks.py).

Trains the workflow's MLP on one worker (strategy `single`) with shared.ml, publishing a
`TrainingProgress` event after every epoch, saving a resumable checkpoint every
`checkpoint_every` epochs (and after the last one), and the final model as safetensors.
The outcome always comes back as one `TrainingFinished` event, success or not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from shared.contracts import EpochReport, TrainingFinished, TrainingProgress, TrainResult, TrainTask
from shared.node_tasks import TaskContext
from shared.spec import TEST_FRACTION, VAL_FRACTION

logger = logging.getLogger(__name__)


class TrainingCancelled(Exception):
    """Raised between epochs once the node has been asked to cancel the task."""


@dataclass
class RunRecord:
    """What a run has produced so far, reported even when it ends early."""

    checkpoints: list[str] = field(default_factory=list)
    history: list[EpochReport] = field(default_factory=list)

    def partial(self, seconds: float, *, cancelled: bool = False) -> TrainResult:
        return TrainResult(
            checkpoints=self.checkpoints, history=self.history, seconds=seconds, cancelled=cancelled
        )


def run_training(payload: dict[str, Any], context: TaskContext) -> None:
    started = time.perf_counter()
    job: TrainTask | None = None
    record = RunRecord()
    try:
        job = TrainTask.model_validate(payload)
        result = _train(job, context, record)
    except TrainingCancelled as cancelled:
        seconds = time.perf_counter() - started
        result = record.partial(seconds, cancelled=True)
        _finish(context, payload, job, succeeded=False, error=str(cancelled), result=result)
        return
    except Exception as exc:
        logger.exception("training task failed")
        result = record.partial(time.perf_counter() - started)
        error = f"{type(exc).__name__}: {exc}"
        _finish(context, payload, job, succeeded=False, error=error, result=result)
        return
    _finish(context, payload, job, succeeded=True, result=result)


def _train(job: TrainTask, context: TaskContext, record: RunRecord) -> TrainResult:
    # Imported here: a node loads torch once, on its first task, and web processes never do.
    import torch

    from shared.ml.architecture import Architecture, build_model
    from shared.ml.checkpoint import TrainingCheckpoint, save_checkpoint, save_model
    from shared.ml.data import load_splits
    from shared.ml.training import EpochMetrics, TrainConfig, Trainer, seed_everything

    torch.set_num_threads(1)
    spec = job.spec
    if context.cancelled.is_set():
        raise TrainingCancelled("cancelled before training started")
    architecture = Architecture.model_validate(job.architecture)
    splits = load_splits(
        spec.dataset,
        seed=spec.training.seed,
        val_fraction=VAL_FRACTION,
        test_fraction=TEST_FRACTION,
    )
    t = spec.training
    config = TrainConfig(
        epochs=t.epochs,
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        optimizer=t.optimizer,
        weight_decay=t.weight_decay,
        seed=t.seed,
        checkpoint_every=t.checkpoint_every,
        patience=t.patience,
        lr_schedule=t.lr_schedule,
        warmup_epochs=t.warmup_epochs,
        lr_step_epochs=t.lr_step_epochs,
        lr_gamma=t.lr_gamma,
        lr_patience=t.lr_patience,
        grad_clip_norm=t.grad_clip_norm,
    )
    checkpoints = record.checkpoints

    def on_epoch(metrics: EpochMetrics) -> None:
        report = EpochReport.model_validate(metrics.to_dict())
        record.history.append(report)
        context.publish(
            TrainingProgress(
                workflow_id=job.workflow_id,
                tenant_id=job.tenant_id,
                job_id=job.job_id,
                **report.model_dump(),
            )
        )
        # Checked after publishing so the last finished epoch is still reported, and
        # checkpointed so the cancelled run can be resumed from where it stopped.
        if context.cancelled.is_set():
            on_checkpoint(trainer.checkpoint())
            raise TrainingCancelled(f"cancelled after epoch {metrics.epoch}")

    def on_checkpoint(checkpoint: TrainingCheckpoint) -> None:
        url = job.artifacts.checkpoint(checkpoint.epoch)
        save_checkpoint(url, checkpoint)
        checkpoints.append(url)

    # The same steps as train_classifier, kept open so the last epoch can be checkpointed too.
    seed_everything(config.seed)
    model = build_model(architecture)
    trainer = Trainer(
        model, architecture, splits, config, on_epoch=on_epoch, on_checkpoint=on_checkpoint
    )
    result = trainer.fit()
    if not checkpoints or not checkpoints[-1].endswith(f"epoch-{result.final.epoch:04d}"):
        on_checkpoint(trainer.checkpoint())
    final = result.final.to_dict()
    summary: dict[str, Any] = {
        "converged": result.converged,
        "convergence_reason": result.convergence_reason,
        "converged_epoch": result.converged_epoch,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs_run": len(result.history),
        "seconds": result.seconds,
    }
    save_model(
        job.artifacts.models,
        model,
        architecture,
        splits.normalization,
        class_names=splits.class_names,
        metrics={**final, **summary},
        extra_metadata={
            "dataset": spec.dataset,
            "split_seed": t.seed,
            "val_fraction": VAL_FRACTION,
            "test_fraction": TEST_FRACTION,
            "job_id": str(job.job_id),
            "workflow_id": str(job.workflow_id),
            "train_config": config.model_dump(mode="json"),
        },
    )
    return TrainResult(
        model_uri=job.artifacts.models,
        checkpoints=checkpoints,
        history=[EpochReport.model_validate(m.to_dict()) for m in result.history],
        final=EpochReport.model_validate(final),
        **summary,
    )


def _finish(
    context: TaskContext,
    payload: dict[str, Any],
    job: TrainTask | None,
    *,
    succeeded: bool,
    result: TrainResult,
    error: str | None = None,
) -> None:
    # An invalid payload still names its job when it can, so the service can close it.
    ids = job.model_dump(include={"job_id", "workflow_id", "tenant_id"}) if job else payload
    context.publish(
        TrainingFinished(
            workflow_id=ids["workflow_id"],
            tenant_id=ids["tenant_id"],
            job_id=ids["job_id"],
            node_id=context.node.node_id,
            succeeded=succeeded,
            error=error,
            result=result,
        )
    )
