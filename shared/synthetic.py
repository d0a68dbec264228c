"""Seeded synthetic datasets, named with their size knobs so the name alone reproduces them.

`synthetic_classification?rows=100000&features=100&classes=10&seed=7` is scikit-learn's
`make_classification` of that size, `synthetic_regression?rows=5000&features=20&seed=3` its
`make_regression` (every knob optional; defaults below): a name travels through the spec,
the model's metadata and the generated `train.py`, and every one of them regenerates the same
rows. Parsed here without numpy, so validating a spec stays cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode

Task = Literal["classification", "regression"]

CLASSIFICATION = "synthetic_classification"
REGRESSION = "synthetic_regression"
_BASES: dict[str, Task] = {CLASSIFICATION: "classification", REGRESSION: "regression"}
# Bounds: a million rows, or 50 M values (200 MB as float32), whichever is hit first.
_BOUNDS = {"rows": (50, 1_000_000), "features": (2, 1000), "classes": (2, 100), "seed": (0, 2**31)}
_KNOBS: dict[Task, tuple[str, ...]] = {
    "classification": ("rows", "features", "classes", "seed"),
    "regression": ("rows", "features", "seed"),
}
_MAX_VALUES = 50_000_000
# The Gaussian noise on a regression target, against a signal whose spread is in the hundreds
# (make_regression's coefficients are drawn from 0..100): learnable, but not exactly linear.
REGRESSION_NOISE = 10.0


@dataclass(frozen=True)
class SyntheticDataset:
    rows: int = 2000
    features: int = 20
    classes: int = 4  # classification only
    seed: int = 0
    task: Task = "classification"

    @property
    def informative(self) -> int:
        """Features that carry the target: half of them, and for classes enough that every
        class can have its own corner of the informative space (2**informative >= classes)."""
        if self.task == "regression":
            return max(self.features // 2, 1)
        return min(self.features, max(self.features // 2, math.ceil(math.log2(self.classes)) + 1))

    @property
    def name(self) -> str:
        """The canonical name: the knobs that differ from the defaults, in a fixed order."""
        default = SyntheticDataset()
        base = REGRESSION if self.task == "regression" else CLASSIFICATION
        knobs = {
            k: getattr(self, k)
            for k in _KNOBS[self.task]
            if getattr(self, k) != getattr(default, k)
        }
        return f"{base}?{urlencode(knobs)}" if knobs else base


def is_synthetic(name: str) -> bool:
    return name.split("?", 1)[0] in _BASES


def parse_synthetic(name: str) -> SyntheticDataset:
    """The dataset a synthetic name describes; ValueError naming the knob that is wrong."""
    base, _, query = name.partition("?")
    if base not in _BASES:
        raise ValueError(f"{base!r} is not a synthetic dataset")
    task = _BASES[base]
    allowed = _KNOBS[task]
    knobs: dict[str, int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            raise ValueError(f"{base}: unknown knob {key!r}; knobs are {', '.join(allowed)}")
        low, high = _BOUNDS[key]
        if not value.isdigit() or not low <= int(value) <= high:
            raise ValueError(f"{base}: {key} must be an integer from {low} to {high}")
        knobs[key] = int(value)
    dataset = SyntheticDataset(**knobs, task=task)
    if dataset.rows * dataset.features > _MAX_VALUES:
        raise ValueError(
            f"{base}: rows x features is {dataset.rows * dataset.features:,}; "
            f"at most {_MAX_VALUES:,} values"
        )
    if task == "regression":
        return dataset
    if 2**dataset.informative < dataset.classes:
        raise ValueError(
            f"{base}: {dataset.features} features cannot separate {dataset.classes} "
            "classes; use more features or fewer classes"
        )
    if dataset.rows < 10 * dataset.classes:
        raise ValueError(f"{base}: at least 10 rows per class ({10 * dataset.classes})")
    return dataset
