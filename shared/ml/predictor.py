"""Serving a saved model: validate raw rows, normalize them as in training, then classify
them or (a regression model) predict their values in the target's units."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from shared.ml.checkpoint import LoadedModel, PathLike, load_model

_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class PredictionResult:
    classes: list[int]
    class_names: list[str]
    probabilities: list[list[float]]  # one row per input row, one column per class

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RegressionResult:
    values: list[float]  # one per input row, in the target's units


class Predictor:
    """Thread-safe for concurrent predict() calls: inference never mutates the model."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.num_features = loaded.architecture.input_dim
        self.class_names = loaded.class_names
        self.task = loaded.architecture.task

    @classmethod
    def from_path(cls, path: PathLike) -> Predictor:
        return cls(load_model(path))

    def predict(self, rows: list[list[float]] | np.ndarray) -> PredictionResult:
        """Classify raw (unnormalized) feature rows; row numbers in errors count from 0."""
        if self.task != "classification":
            raise TypeError("a regression model predicts values: call predict_values")
        x = self.normalized(self._validated(rows))
        with torch.inference_mode():
            probabilities = torch.softmax(self.loaded.model(torch.from_numpy(x)), dim=1)
        classes = probabilities.argmax(dim=1).tolist()
        return PredictionResult(
            classes=classes,
            class_names=[self.class_names[c] for c in classes],
            probabilities=probabilities.tolist(),
        )

    def predict_values(self, rows: list[list[float]] | np.ndarray) -> RegressionResult:
        """A regression model's values for raw feature rows, de-standardized to the target's
        units; row numbers in errors count from 0."""
        target = self.loaded.target_normalization
        if target is None:
            raise TypeError("a classifier predicts classes: call predict")
        x = self.normalized(self._validated(rows))
        with torch.inference_mode():
            outputs = self.loaded.model(torch.from_numpy(x))[:, 0].numpy()
        return RegressionResult(values=target.invert(outputs).tolist())

    def answer(self, rows: list[list[float]] | np.ndarray) -> PredictionResult | RegressionResult:
        """What the model predicts for the rows: classes, or values for regression."""
        return self.predict_values(rows) if self.task == "regression" else self.predict(rows)

    def normalized(self, x: np.ndarray) -> np.ndarray:
        return self.loaded.normalization.apply(x)

    def _validated(self, rows: list[list[float]] | np.ndarray) -> np.ndarray:
        if isinstance(rows, np.ndarray):
            if rows.ndim != 2:
                raise ValueError(f"expected a 2-D array of rows, got {rows.ndim} dimension(s)")
            row_list: list[Any] = list(rows)
        else:
            row_list = list(rows)
        if not row_list:
            raise ValueError("no rows to predict")
        x = np.empty((len(row_list), self.num_features), dtype=np.float64)
        for i, row in enumerate(row_list):
            x[i] = self._validated_row(i, row)
        return x

    def _validated_row(self, i: int, row: Any) -> np.ndarray:
        try:
            values = np.asarray(row, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"row {i} contains a value that is not a number") from None
        if values.ndim != 1:
            raise ValueError(f"row {i} must be a flat list of numbers")
        if values.shape[0] != self.num_features:
            raise ValueError(
                f"row {i} has {values.shape[0]} features; the model expects {self.num_features}"
            )
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(
                f"row {i} has a non-finite value ({values[bad[0]]}) at feature {bad[0]}"
            )
        # The model computes in float32; a larger value would silently become infinity.
        huge = np.flatnonzero(np.abs(values) > _FLOAT32_MAX)
        if huge.size:
            raise ValueError(f"row {i} has a value too large for float32 at feature {huge[0]}")
        return values
