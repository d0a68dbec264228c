"""When a training run counts as converged (or diverged), tracked epoch by epoch.

A run has converged at the first epoch where either
- the validation loss has not dropped more than `threshold` below its best for `patience`
  consecutive epochs (the model stopped getting better on unseen data), or
- the train accuracy has not risen more than `accuracy_tolerance` above its best for
  `patience` consecutive epochs (it fits the training set as well as it is going to; this
  includes sitting at 100%, and also a run stuck at chance, which converged without learning).
  A regression run's score is its train R² instead of accuracy: the same share-of-what-can-be-
  explained, so the same rule reads alike (`score` names it).
Converged says training stopped making progress, not that the model is good: read it together
with the final metrics. A non-finite training loss is divergence, which is never convergence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

# Set from the run's config, so a checkpoint restores progress but never these.
_SETTINGS = frozenset({"patience", "threshold", "accuracy_tolerance", "score"})


@dataclass
class ConvergenceMonitor:
    patience: int
    threshold: float
    accuracy_tolerance: float = 0.0
    score: str = "accuracy"  # what train_accuracy holds: "accuracy", or "R²" for regression
    best_val_loss: float | None = None
    best_epoch: int = 0
    epochs_without_val_improvement: int = 0
    best_train_accuracy: float | None = None
    epochs_without_accuracy_improvement: int = 0
    converged_epoch: int | None = None
    converged_reason: str | None = None
    diverged_reason: str | None = None

    @property
    def converged(self) -> bool:
        return self.converged_epoch is not None

    @property
    def diverged(self) -> bool:
        return self.diverged_reason is not None

    def update(self, epoch: int, train_loss: float, train_accuracy: float, val_loss: float) -> None:
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            self.diverged_reason = (
                f"diverged at epoch {epoch}: train loss {train_loss}, validation loss {val_loss}"
            )
            return
        if self.best_val_loss is None or val_loss < self.best_val_loss - self.threshold:
            self.best_val_loss, self.best_epoch = val_loss, epoch
            self.epochs_without_val_improvement = 0
        else:
            self.epochs_without_val_improvement += 1
        if (
            self.best_train_accuracy is None
            or train_accuracy > self.best_train_accuracy + self.accuracy_tolerance
        ):
            self.best_train_accuracy = train_accuracy
            self.epochs_without_accuracy_improvement = 0
        else:
            self.epochs_without_accuracy_improvement += 1
        if not self.converged:
            self._check(epoch)

    def _check(self, epoch: int) -> None:
        if self.epochs_without_val_improvement >= self.patience:
            self.converged_reason = (
                f"validation loss did not improve by more than {self.threshold:g} for "
                f"{self.patience} epochs (best {self.best_val_loss:.4f} at epoch {self.best_epoch})"
            )
        elif self.epochs_without_accuracy_improvement >= self.patience:
            self.converged_reason = (
                f"train {self.score} plateaued at {self.best_train_accuracy:.4f} "
                f"for {self.patience} epochs"
            )
        else:
            return
        self.converged_epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k not in _SETTINGS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        progress = {f.name for f in fields(self)} - _SETTINGS
        if set(state) != progress:
            raise ValueError(f"convergence state must have exactly the fields {sorted(progress)}")
        for key, value in state.items():
            setattr(self, key, value)
