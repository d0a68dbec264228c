"""Deterministic mini-batch training of a network on DatasetSplits: cross-entropy for a
classifier, mean squared error of the standardized target for a regression network.

Bit-identical runs need the same seed, the same data and the same torch thread count:
intra-op parallel kernels sum in an order that depends on the number of threads. Setting
`torch.set_num_threads(1)` is the job of the process entry point (a node worker, a test
fixture), because it is process-wide; the tiny MLPs trained here lose nothing by it.

The Trainer is written so a torch.distributed job can reuse it unchanged: it accepts an
already-wrapped model (DDP), saves the unwrapped weights, and takes an `epoch_sampler` that
returns the training-row order for an epoch, e.g. a DistributedSampler's shard after
`set_epoch(epoch)`.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn.utils import clip_grads_with_norm_

from shared.ml.architecture import Architecture, build_model
from shared.ml.checkpoint import TrainingCheckpoint, unwrap_model, weights_of
from shared.ml.convergence import ConvergenceMonitor
from shared.ml.data import DatasetSplits
from shared.ml.evaluate import loss_and_accuracy, regression_loss, regression_metrics
from shared.ml.schedule import LearningRateSchedule

# Settings a resumed run may change (a retry of a diverged run lowers the learning rate and
# turns clipping on); any other difference would silently alter the run.
_RESUMABLE_CHANGES = frozenset(
    {"epochs", "checkpoint_every", "learning_rate", "grad_clip_norm", "patience"}
)


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(default=20, ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1, le=65536)
    learning_rate: float = Field(default=1e-3, gt=0, le=10)
    optimizer: Literal["adam", "sgd", "adamw", "rmsprop"] = "adam"
    momentum: float = Field(default=0.9, ge=0, lt=1, description="used by sgd and rmsprop")
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    seed: int = Field(default=42, ge=0, lt=2**32)
    lr_schedule: Literal["constant", "step", "cosine", "plateau"] = "constant"
    warmup_epochs: int = Field(default=0, ge=0, le=1000, description="linear warm-up first")
    lr_step_epochs: int = Field(default=10, ge=1, le=1000, description="step: epochs per decay")
    lr_gamma: float = Field(default=0.1, gt=0, lt=1, description="step/plateau: decay factor")
    lr_patience: int = Field(default=2, ge=1, le=1000, description="plateau: epochs to wait")
    grad_clip_norm: float | None = Field(default=None, gt=0, description="max gradient norm")
    checkpoint_every: int = Field(default=0, ge=0, description="epochs; 0 never checkpoints")
    early_stopping: bool = Field(default=True, description="stop at the first converged epoch")
    patience: int = Field(default=5, ge=1, le=1000)
    convergence_threshold: float = Field(
        default=1e-3, ge=0, description="smallest validation-loss drop that counts as progress"
    )
    accuracy_plateau_tolerance: float = Field(
        default=0.0, ge=0, le=1, description="smallest train-accuracy rise that counts"
    )

    def build_optimizer(self, parameters: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        # foreach: one kernel per step for all the tensors instead of a Python loop over them
        # (torch picks it only on CUDA by default); a quarter of a small MLP's step on CPU.
        common: dict[str, Any] = {
            "lr": self.learning_rate,
            "weight_decay": self.weight_decay,
            "foreach": True,
        }
        if self.optimizer == "sgd":
            return torch.optim.SGD(parameters, momentum=self.momentum, **common)
        if self.optimizer == "rmsprop":
            return torch.optim.RMSprop(parameters, momentum=self.momentum, **common)
        optimizer = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        return optimizer(parameters, **common)


def _total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The gradient's L2 norm over every tensor: torch's get_total_norm without its wrappers,
    which cost a tenth of a small model's step."""
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch; see the module docstring for the thread-count caveat."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    train_accuracy: float | None  # classification; None for regression
    val_loss: float
    val_accuracy: float | None
    seconds: float
    # Regression only: R² of both splits, the validation MAE and RMSE in the target's units.
    train_r2: float | None = None
    val_r2: float | None = None
    val_mae: float | None = None
    val_rmse: float | None = None

    # How the epoch trained: the rate it used, its mean gradient norm (before clipping), its
    # training throughput. Absent from checkpoints written before they were measured.
    learning_rate: float | None = None
    grad_norm: float | None = None
    samples_per_second: float | None = None
    samples: int | None = None  # training rows this epoch (of every worker, in a job)
    # Each process of the job (rank order) as measured over the epoch: its role, rows
    # trained, CPU and resident memory. Filled by the `coordinate` hook (shared.ml.strategies).
    nodes: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    history: list[EpochMetrics]
    best_epoch: int  # lowest validation loss: the epoch whose weights `best_weights()` holds
    best_val_loss: float
    converged: bool
    convergence_reason: str  # why it converged, or why it did not
    converged_epoch: int | None
    stopped_early: bool  # ended before config.epochs: converged with early stopping, or diverged
    diverged: bool
    seconds: float  # wall time of the fit() call, excluding epochs run before a resume

    @property
    def final(self) -> EpochMetrics:
        return self.history[-1]

    @property
    def best(self) -> EpochMetrics:
        """The epoch of the kept model (the last one when no epoch had a finite loss)."""
        return next((m for m in self.history if m.epoch == self.best_epoch), self.final)

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["final"] = self.final.to_dict()
        return result


EpochCallback = Callable[[EpochMetrics], None]
CheckpointHook = Callable[[TrainingCheckpoint], None]
EpochSampler = Callable[[int], Sequence[int] | torch.Tensor]
# After each epoch: (its metrics, whether this process would stop) -> what the job agreed.
EpochCoordinator = Callable[[EpochMetrics, bool], tuple[EpochMetrics, bool]]


class Trainer:
    """Trains `model` (plain or DDP-wrapped) in place; one instance per run.

    A callback that raises ends the run; the last checkpoint handed to `on_checkpoint` still
    resumes it. Under DDP only the logging/saving rank should pass the callbacks; every rank
    passes the same `coordinate`, which lets the ranks agree after each epoch on whether to
    stop (so none is left waiting in a collective) and adds the job's per-process figures.

    The weights of the best validation epoch are kept as the run goes (`best_weights()`),
    because early stopping, by design, ends some epochs after the best one.
    """

    def __init__(
        self,
        model: nn.Module,
        architecture: Architecture,
        splits: DatasetSplits,
        config: TrainConfig,
        *,
        on_epoch: EpochCallback | None = None,
        on_checkpoint: CheckpointHook | None = None,
        on_snapshot: CheckpointHook | None = None,
        epoch_sampler: EpochSampler | None = None,
        apply_gradients: Callable[[], None] | None = None,
        coordinate: EpochCoordinator | None = None,
        device: torch.device | None = None,
        seed_offset: int = 0,
    ) -> None:
        # The model must already be on `device` (DDP wraps it there); the splits go there once.
        self._device = device or torch.device("cpu")
        self.model = model
        self.architecture = architecture
        self.config = config
        self.optimizer = config.build_optimizer(model.parameters())
        self._on_epoch = on_epoch
        self._on_checkpoint = on_checkpoint
        # Every epoch, on every rank that asks: the in-memory snapshot a recovery resumes from.
        self._on_snapshot = on_snapshot
        self._epoch_sampler = epoch_sampler or self._shuffled_rows
        # What a step does with the gradients: this process's optimizer, or (a parameter
        # server's worker) push them and pull the new weights.
        self._apply_gradients = apply_gradients or self.optimizer.step
        self._coordinate = coordinate
        # Each worker of a job draws its own dropout masks (seed + its shard's index).
        self._seed_offset = seed_offset
        self._schedule = LearningRateSchedule(config)
        if splits.task != architecture.task:
            raise ValueError(f"a {architecture.task} network for {splits.task} data")
        self._target = splits.target_normalization
        y_train, y_val = splits.y_train, splits.y_val
        self._loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
        if self._target is not None:
            # The network learns the standardized target; see TargetNormalization.
            y_train, y_val = self._target.apply(y_train), self._target.apply(y_val)
            self._loss = regression_loss
        self._x_train = torch.from_numpy(splits.x_train).to(self._device)
        self._y_train = torch.from_numpy(y_train).to(self._device)
        self._x_val = torch.from_numpy(splits.x_val).to(self._device)
        self._y_val = torch.from_numpy(y_val).to(self._device)
        self._monitor = monitor_for(config, architecture)
        self._history: list[EpochMetrics] = []
        self._epoch = 0
        self._best_state: dict[str, torch.Tensor] | None = None

    def _shuffled_rows(self, epoch: int) -> torch.Tensor:
        # The order depends only on (seed, epoch), like DistributedSampler, so a resumed run
        # replays the same batches without having to checkpoint a generator.
        generator = torch.Generator().manual_seed((self.config.seed << 16) + epoch)
        return torch.randperm(len(self._x_train), generator=generator)

    def train_epoch(self, epoch: int) -> tuple[float, int]:
        """One pass over this process's training rows, in mini-batches, at the epoch's
        learning rate; returns the mean gradient norm (measured before any clipping) and the
        number of rows trained on."""
        self.model.train()
        for group in self.optimizer.param_groups:
            group["lr"] = self._schedule.rate(epoch)
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        rows = torch.as_tensor(self._epoch_sampler(epoch), dtype=torch.int64, device=self._device)
        norms: list[torch.Tensor] = []
        for batch in rows.split(self.config.batch_size):
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._loss(self.model(self._x_train[batch]), self._y_train[batch])
            loss.backward()
            norm = _total_norm([p.grad for p in parameters if p.grad is not None])
            if self.config.grad_clip_norm is not None:
                clip_grads_with_norm_(parameters, self.config.grad_clip_norm, norm)
            norms.append(norm)
            self._apply_gradients()
        # One read of the norms per epoch, not one device sync per step.
        grad_norm = float(torch.stack(norms).mean()) if norms else 0.0
        return grad_norm, len(rows)

    def _run_epoch(self, epoch: int) -> EpochMetrics:
        started = time.perf_counter()
        grad_norm, rows = self.train_epoch(epoch)
        train_seconds = time.perf_counter() - started
        # Train metrics come from a clean eval-mode pass, not the running batch average, so
        # train and validation numbers are measured alike and their gap is real overfitting.
        train_accuracy: float | None = None
        val_accuracy: float | None = None
        train: dict[str, float | None] = dict.fromkeys(("r2",))
        val: dict[str, float | None] = dict.fromkeys(("r2", "mae", "rmse"))
        if self._target is not None:
            train_loss, train_scores = regression_metrics(
                self.model, self._x_train, self._y_train, self._target
            )
            val_loss, val_scores = regression_metrics(
                self.model, self._x_val, self._y_val, self._target
            )
            train, val = {**train_scores}, {**val_scores}
        else:
            train_loss, train_accuracy = loss_and_accuracy(self.model, self._x_train, self._y_train)
            val_loss, val_accuracy = loss_and_accuracy(self.model, self._x_val, self._y_val)
        return EpochMetrics(
            epoch=epoch,
            epochs=self.config.epochs,
            train_loss=train_loss,
            train_accuracy=train_accuracy,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            train_r2=train["r2"],
            val_r2=val["r2"],
            val_mae=val["mae"],
            val_rmse=val["rmse"],
            seconds=time.perf_counter() - started,
            learning_rate=self.optimizer.param_groups[0]["lr"],
            grad_norm=grad_norm,
            samples_per_second=rows / train_seconds if train_seconds > 0 else None,
            samples=rows,
        )

    def _finished(self) -> bool:
        return run_is_over(self.config, self._epoch, self._monitor)

    def fit(self, *, resume_from: TrainingCheckpoint | None = None) -> TrainResult:
        if resume_from is not None:
            self.restore(resume_from)
        elif self._epoch == 0:
            # Dropout draws from the global RNG: seed it so a run depends only on its config
            # and initial weights, whatever the process did before.
            torch.manual_seed(self.config.seed + self._seed_offset)
        started = time.perf_counter()
        finished = self._finished()
        while not finished:
            metrics = self._run_epoch(self._epoch + 1)
            self._epoch = metrics.epoch
            self._monitor.update(
                metrics.epoch, metrics.train_loss, train_score(metrics), metrics.val_loss
            )
            self._schedule.observe(metrics.val_loss)
            if self._monitor.best_epoch == metrics.epoch:
                self._best_state = weights_of(self.model)
            finished = self._finished()
            if self._coordinate is not None:
                metrics, finished = self._coordinate(metrics, finished)
            self._history.append(metrics)
            every = self.config.checkpoint_every
            # Callbacks run on a forked RNG so whatever they do cannot change the training.
            with torch.random.fork_rng(devices=[]):
                if self._on_epoch is not None:
                    self._on_epoch(metrics)
                if self._on_checkpoint is not None and every and metrics.epoch % every == 0:
                    self._on_checkpoint(self.checkpoint())
                if self._on_snapshot is not None:
                    self._on_snapshot(self.checkpoint())
        return self._result(time.perf_counter() - started)

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The weights after the best validation epoch so far (the current ones before any)."""
        return self._best_state if self._best_state is not None else weights_of(self.model)

    def checkpoint(self) -> TrainingCheckpoint:
        """A snapshot of the run after the last completed epoch."""
        return TrainingCheckpoint(
            epoch=self._epoch,
            architecture=self.architecture,
            config=self.config.model_dump(mode="json"),
            model_state=weights_of(self.model),
            # state_dict() hands out the live moment tensors; later steps would change them.
            optimizer_state=copy.deepcopy(self.optimizer.state_dict()),
            rng_state=torch.get_rng_state(),
            progress={
                "history": [m.to_dict() for m in self._history],
                "convergence": self._monitor.state_dict(),
                "lr_schedule": self._schedule.state_dict(),
            },
            best_model_state=self._best_state,
        )

    def restore(self, checkpoint: TrainingCheckpoint) -> None:
        if checkpoint.architecture != self.architecture:
            raise ValueError("the checkpoint was trained with a different architecture")
        saved = TrainConfig.model_validate(checkpoint.config).model_dump()
        current = self.config.model_dump()
        changed = sorted(
            k for k in current if current[k] != saved[k] and k not in _RESUMABLE_CHANGES
        )
        if changed:
            raise ValueError(f"cannot resume with different settings: {', '.join(changed)}")
        if checkpoint.epoch > self.config.epochs:
            raise ValueError(
                f"the checkpoint is at epoch {checkpoint.epoch}, past epochs={self.config.epochs}"
            )
        if _all_finite(checkpoint.model_state):
            unwrap_model(self.model).load_state_dict(checkpoint.model_state)
            self.optimizer.load_state_dict(checkpoint.optimizer_state)
        elif checkpoint.best_model_state is not None:
            # A run that diverged: go on from its best epoch's weights, with fresh moments.
            unwrap_model(self.model).load_state_dict(checkpoint.best_model_state)
        else:
            raise ValueError("the checkpoint's weights are not finite and it has no best epoch")
        torch.set_rng_state(checkpoint.rng_state)
        self._history = [EpochMetrics(**m) for m in checkpoint.progress["history"]]
        self._monitor.load_state_dict(checkpoint.progress["convergence"])
        # Judged afresh: a resumed run (with a smaller step, say) may not diverge again.
        self._monitor.diverged_reason = None
        self._schedule.load_state_dict(checkpoint.progress.get("lr_schedule", {}))
        self._best_state = checkpoint.best_model_state
        self._epoch = checkpoint.epoch

    def _result(self, seconds: float) -> TrainResult:
        monitor = self._monitor
        if monitor.diverged_reason is not None:
            reason = monitor.diverged_reason
        elif monitor.converged_reason is not None:
            reason = monitor.converged_reason
        else:
            reason = (
                f"not converged after {self._epoch} epochs: validation loss and train "
                f"{monitor.score} both still improved within the last {self.config.patience} "
                "epochs"
            )
        return TrainResult(
            history=list(self._history),
            best_epoch=monitor.best_epoch,
            best_val_loss=math.nan if monitor.best_val_loss is None else monitor.best_val_loss,
            converged=monitor.converged,
            convergence_reason=reason,
            converged_epoch=monitor.converged_epoch,
            stopped_early=self._epoch < self.config.epochs,
            diverged=monitor.diverged,
            seconds=seconds,
        )


def monitor_for(config: TrainConfig, architecture: Architecture) -> ConvergenceMonitor:
    """The convergence rule of a run: its patience and thresholds, and the train score that
    plateaus (accuracy, or R² for regression)."""
    score = "R²" if architecture.task == "regression" else "accuracy"
    return ConvergenceMonitor(
        config.patience, config.convergence_threshold, config.accuracy_plateau_tolerance, score
    )


def train_score(metrics: EpochMetrics) -> float:
    """The epoch's train accuracy, or train R² for regression: what converges by plateauing."""
    score = metrics.train_r2 if metrics.train_accuracy is None else metrics.train_accuracy
    assert score is not None, "an epoch measures accuracy or R²"
    return score


def run_is_over(config: TrainConfig, epoch: int, monitor: ConvergenceMonitor) -> bool:
    """Whether a run at `epoch`, with this convergence record, trains no further epoch."""
    stopped = config.early_stopping and monitor.converged
    return epoch >= config.epochs or stopped or monitor.diverged


def resumes_finished(checkpoint: TrainingCheckpoint, config: TrainConfig) -> bool:
    """Whether a run resumed from `checkpoint` stops before its first epoch: it had already
    reached its last epoch or converged (a snapshot taken as the run ended). Divergence is
    judged afresh on resume (see `Trainer.restore`), so it does not count here. A parameter
    server asks this to agree with its workers, which then train no epoch to meet it in."""
    monitor = ConvergenceMonitor(
        config.patience, config.convergence_threshold, config.accuracy_plateau_tolerance
    )
    monitor.load_state_dict(checkpoint.progress["convergence"])
    monitor.diverged_reason = None
    return run_is_over(config, checkpoint.epoch, monitor)


def _all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def train_classifier(
    splits: DatasetSplits,
    architecture: Architecture,
    config: TrainConfig,
    *,
    on_epoch: EpochCallback | None = None,
    on_checkpoint: CheckpointHook | None = None,
    resume_from: TrainingCheckpoint | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Seed, build and train a model in one call: the single-process entry point. The model
    returned holds the best validation epoch's weights."""
    seed_everything(config.seed)
    model = build_model(architecture)
    trainer = Trainer(
        model, architecture, splits, config, on_epoch=on_epoch, on_checkpoint=on_checkpoint
    )
    result = trainer.fit(resume_from=resume_from)
    model.load_state_dict(trainer.best_weights())
    return model, result
