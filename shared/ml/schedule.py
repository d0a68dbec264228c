"""The learning rate of each epoch: an optional linear warm-up, then constant, step decay,
cosine decay, or a cut on a validation-loss plateau.

Every rate but the plateau's is a pure function of the epoch, so a resumed run uses the same
rates without any saved state; the plateau's scale and counters go into the checkpoint.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.ml.training import TrainConfig


class LearningRateSchedule:
    def __init__(self, config: TrainConfig) -> None:
        self._config = config
        self._plateau_scale = 1.0
        self._best_val_loss: float | None = None
        self._bad_epochs = 0

    def rate(self, epoch: int) -> float:
        """The rate epoch `epoch` (1-based) trains at."""
        c = self._config
        base = c.learning_rate
        if epoch <= c.warmup_epochs:
            return base * epoch / c.warmup_epochs
        after = epoch - c.warmup_epochs  # 1 for the first epoch after the warm-up
        if c.lr_schedule == "step":
            return base * c.lr_gamma ** ((after - 1) // c.lr_step_epochs)
        if c.lr_schedule == "cosine":
            span = max(1, c.epochs - c.warmup_epochs)
            return base * 0.5 * (1.0 + math.cos(math.pi * (after - 1) / span))
        if c.lr_schedule == "plateau":
            return base * self._plateau_scale
        return base

    def observe(self, val_loss: float) -> None:
        """After an epoch: a plateau schedule cuts the rate once the validation loss has not
        improved for `lr_patience` epochs."""
        if self._config.lr_schedule != "plateau" or math.isnan(val_loss):
            return
        if self._best_val_loss is None or val_loss < self._best_val_loss:
            self._best_val_loss, self._bad_epochs = val_loss, 0
            return
        self._bad_epochs += 1
        if self._bad_epochs >= self._config.lr_patience:
            self._plateau_scale *= self._config.lr_gamma
            self._bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "plateau_scale": self._plateau_scale,
            "best_val_loss": self._best_val_loss,
            "bad_epochs": self._bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._plateau_scale = state.get("plateau_scale", 1.0)
        self._best_val_loss = state.get("best_val_loss")
        self._bad_epochs = state.get("bad_epochs", 0)
