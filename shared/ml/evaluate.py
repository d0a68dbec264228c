"""Model quality (accuracy, loss, per-class scores; MAE, RMSE, R² for regression) and
inference latency."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
from torch import nn

from shared.ml.data import TargetNormalization
from shared.ml.scores import regression_scores

# Rows per forward pass when scoring a whole split: bounds memory, not a tuning knob.
_EVAL_CHUNK = 8192


def _as_tensor(x: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(x).to(dtype)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # Dropout must be off while measuring; the caller's mode is restored afterwards so a
    # Trainer can measure mid-run.
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor) -> torch.Tensor:
    features = _as_tensor(x, torch.float32)
    with _eval_mode(model), torch.inference_mode():
        return torch.cat([model(chunk) for chunk in features.split(_EVAL_CHUNK)])


def loss_and_accuracy(
    model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over the whole of (x, y), in eval mode."""
    logits = predict_logits(model, x)
    targets = _as_tensor(y, torch.int64)
    loss = F.cross_entropy(logits, targets).item()
    accuracy = (logits.argmax(dim=1) == targets).double().mean().item()
    return loss, accuracy


def regression_loss(outputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A regression network's training loss: the MSE of its one output against the
    standardized target."""
    return F.mse_loss(outputs[:, 0], z)


def regression_metrics(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    z: np.ndarray | torch.Tensor,
    target: TargetNormalization,
) -> tuple[float, dict[str, float]]:
    """Over the whole of (x, z) in eval mode, `z` the standardized target: the loss the
    network trains on, and MAE, RMSE and R² on the real (de-standardized) values."""
    predicted = predict_logits(model, x)
    truth = _as_tensor(z, torch.float32)
    loss = regression_loss(predicted, truth).item()
    scores = regression_scores(
        target.invert(predicted[:, 0].cpu().numpy()), target.invert(truth.cpu().numpy())
    )
    return loss, scores


def evaluate_regression(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray,
    target: TargetNormalization,
) -> dict[str, Any]:
    """MAE, RMSE and R² on real (de-standardized) values, and the loss the network trained
    on (MSE of the standardized target)."""
    loss, scores = regression_metrics(model, x, target.apply(y), target)
    return {"num_samples": len(y), "loss": loss, **scores}


def evaluate(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, loss, per-class precision/recall/F1 and the confusion matrix (rows = truth)."""
    logits = predict_logits(model, x)
    targets = _as_tensor(y, torch.int64)
    num_classes = logits.shape[1]
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"{len(class_names)} class names for a model with {num_classes} classes")
    predicted = logits.argmax(dim=1).numpy()
    truth = targets.numpy()
    labels = list(range(num_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    names = class_names or [str(c) for c in labels]
    return {
        "num_samples": int(truth.shape[0]),
        "accuracy": float((predicted == truth).mean()),
        "loss": F.cross_entropy(logits, targets).item(),
        "macro_f1": float(np.mean(f1)),
        "per_class": [
            {
                "class": c,
                "name": names[c],
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
            }
            for c in labels
        ],
        "confusion_matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
    }


@dataclass(frozen=True)
class LatencyStats:
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    repeats: int
    batch_size: int
    batch_rows_per_second: float

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def measure_latency(
    model: nn.Module,
    x_rows: np.ndarray | torch.Tensor,
    repeats: int = 200,
    warmup: int = 20,
    batch_size: int = 256,
) -> LatencyStats:
    """Single-row inference latency percentiles, plus throughput for one batch of rows.

    Rows are sliced before timing starts, so only the forward pass is measured; the warmup
    passes are discarded because the first calls pay for allocator and kernel setup.
    """
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError("repeats and batch_size must be positive and warmup non-negative")
    rows = _as_tensor(x_rows, torch.float32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ValueError("x_rows must be a non-empty 2-D array of feature rows")
    singles = [rows[i % len(rows)].unsqueeze(0) for i in range(warmup + repeats)]
    batch = rows[torch.arange(batch_size) % len(rows)]
    batch_repeats = max(5, repeats // 10)
    with _eval_mode(model), torch.inference_mode():
        for row in singles[:warmup]:
            model(row)
        single_ns = []
        for row in singles[warmup:]:
            started = time.perf_counter_ns()
            model(row)
            single_ns.append(time.perf_counter_ns() - started)
        for _ in range(min(warmup, batch_repeats)):
            model(batch)
        batch_ns = []
        for _ in range(batch_repeats):
            started = time.perf_counter_ns()
            model(batch)
            batch_ns.append(time.perf_counter_ns() - started)
    single_ms = np.asarray(single_ns, dtype=np.float64) / 1e6
    p50, p95, p99 = np.percentile(single_ms, [50, 95, 99])
    return LatencyStats(
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=float(single_ms.mean()),
        repeats=repeats,
        batch_size=batch_size,
        batch_rows_per_second=batch_size / (float(np.median(batch_ns)) / 1e9),
    )


def overfitting_gap(train_accuracy: float, val_accuracy: float) -> float:
    """Train minus validation accuracy: how much of the train score fails to generalize."""
    for name, value in (("train_accuracy", train_accuracy), ("val_accuracy", val_accuracy)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return train_accuracy - val_accuracy


def r2_gap(train_r2: float, val_r2: float) -> float:
    """Train minus validation R²: a regression model's overfitting, as `overfitting_gap` is a
    classifier's (both are shares of what there is to explain, so a gap reads alike)."""
    for name, value in (("train_r2", train_r2), ("val_r2", val_r2)):
        if not value <= 1.0:
            raise ValueError(f"{name} must be at most 1, got {value}")
    return train_r2 - val_r2
