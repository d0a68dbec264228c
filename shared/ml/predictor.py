"""Serving a saved model: validate raw rows, normalize them as in training, then classify
them or (a regression model) predict their values in the target's units."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from shared.ml.checkpoint import LoadedModel, PathLike, load_model
from shared.ml.runtimes import Forward, RuntimeChoice, torch_forward

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
        # The forward pass: torch's, until a server measures a faster runtime (`use`).
        self.forward: Forward = torch_forward(loaded.model)
        self.runtime = "torch"

    def use(self, runtime: RuntimeChoice) -> None:
        self.forward, self.runtime = runtime.forward, runtime.name

    @classmethod
    def from_path(cls, path: PathLike) -> Predictor:
        return cls(load_model(path))

    def predict(self, rows: list[list[float]] | np.ndarray) -> PredictionResult:
        """Classify raw (unnormalized) feature rows; row numbers in errors count from 0."""
        if self.task != "classification":
            raise TypeError("a regression model predicts values: call predict_values")
        return self._classes(self.forward(self.prepare(rows)))

    def predict_values(self, rows: list[list[float]] | np.ndarray) -> RegressionResult:
        """A regression model's values for raw feature rows, de-standardized to the target's
        units; row numbers in errors count from 0."""
        if self.loaded.target_normalization is None:
            raise TypeError("a classifier predicts classes: call predict")
        return self._values(self.forward(self.prepare(rows)))

    def answer(self, rows: list[list[float]] | np.ndarray) -> PredictionResult | RegressionResult:
        """What the model predicts for the rows: classes, or values for regression."""
        return self.interpret(self.forward(self.prepare(rows)))

    # The three steps of `answer`, for a server that runs several requests' rows through
    # one forward pass: each request's rows prepared (and refused) alone, the outputs of the
    # whole batch computed at once, each request's share of them interpreted alone.
    def prepare(self, rows: list[list[float]] | np.ndarray) -> np.ndarray:
        """Raw rows, checked, as the network's normalized float32 input."""
        return self.normalized(self._validated(rows))

    def interpret(self, outputs: np.ndarray) -> PredictionResult | RegressionResult:
        """The network's outputs for some rows as what the model predicts for them."""
        return self._values(outputs) if self.task == "regression" else self._classes(outputs)

    def _classes(self, logits: np.ndarray) -> PredictionResult:
        exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = exponentials / exponentials.sum(axis=1, keepdims=True)
        classes = probabilities.argmax(axis=1).tolist()
        return PredictionResult(
            classes=classes,
            class_names=[self.class_names[c] for c in classes],
            probabilities=probabilities.tolist(),
        )

    def _values(self, outputs: np.ndarray) -> RegressionResult:
        target = self.loaded.target_normalization
        assert target is not None, "a regression model carries its target's normalization"
        return RegressionResult(values=target.invert(outputs[:, 0]).tolist())

    def normalized(self, x: np.ndarray) -> np.ndarray:
        return self.loaded.normalization.apply(x)

    def _validated(self, rows: list[list[float]] | np.ndarray) -> np.ndarray:
        try:  # the common case, whole: a rectangle of numbers of the model's width
            x = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            x = None
        if x is not None and x.ndim == 2 and x.shape[1] == self.num_features and len(x):
            self._check_values(x)
            return x
        # Something is wrong with some row: find which, and say what.
        if isinstance(rows, np.ndarray) and rows.ndim != 2:
            raise ValueError(f"expected a 2-D array of rows, got {rows.ndim} dimension(s)")
        row_list: list[Any] = list(rows)
        if not row_list:
            raise ValueError("no rows to predict")
        checked = np.empty((len(row_list), self.num_features), dtype=np.float64)
        for i, row in enumerate(row_list):
            checked[i] = self._validated_row(i, row)
        return checked

    @staticmethod
    def _check_values(x: np.ndarray, first_row: int = 0) -> None:
        """Every value finite and within float32 (the model computes in float32; a larger
        value would silently become infinity); else name the first bad row and feature."""
        finite = np.isfinite(x)
        if not finite.all():
            i, j = np.argwhere(~finite)[0]
            value = x[i, j]
            raise ValueError(f"row {first_row + i} has a non-finite value ({value}) at feature {j}")
        too_large = np.abs(x) > _FLOAT32_MAX
        if too_large.any():
            i, j = np.argwhere(too_large)[0]
            raise ValueError(
                f"row {first_row + i} has a value too large for float32 at feature {j}"
            )

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
        self._check_values(values[np.newaxis, :], first_row=i)
        return values
