"""Running statistics over streamed batches: per-feature moments, non-finite values with
their first position, and the target's classes or moments. Memory stays that of one batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from shared.dataset_files.schema import (
    MAX_CLASSES,
    MAX_INTEGER_CLASSES,
    MIN_ROWS,
    MIN_ROWS_PER_CLASS,
    ColumnStatistics,
    DatasetFileError,
    Task,
)


class FeatureTally:
    """Mean, variance (Chan's pairwise merge, stable over millions of rows), min and max of
    each feature column, and where the first missing or non-finite value is."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        width = len(self.names)
        self.rows = 0
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)
        self.min = np.full(width, np.inf)
        self.max = np.full(width, -np.inf)
        self.non_finite = 0
        self.first_non_finite: tuple[int, int] | None = None  # (row, column index)

    def add(self, block: np.ndarray) -> None:
        """`block`: the next rows, shape (rows, features), missing values as NaN."""
        finite = np.isfinite(block)
        if not finite.all():
            self.non_finite += int(block.size - np.count_nonzero(finite))
            if self.first_non_finite is None:
                row, column = np.argwhere(~finite)[0]
                self.first_non_finite = (self.rows + int(row), int(column))
            return  # the file is refused at the end; its moments no longer matter
        rows = block.shape[0]
        if rows == 0:
            return
        mean = block.mean(axis=0)
        m2 = ((block - mean) ** 2).sum(axis=0)
        total = self.rows + rows
        delta = mean - self.mean
        self.mean = self.mean + delta * rows / total
        self.m2 = self.m2 + m2 + delta**2 * self.rows * rows / total
        self.min = np.minimum(self.min, block.min(axis=0))
        self.max = np.maximum(self.max, block.max(axis=0))
        self.rows = total

    def check_finite(self, row_names: str = "row") -> None:
        if self.first_non_finite is None:
            return
        row, column = self.first_non_finite
        name = self.names[column] if len(self.names) > 1 or self.names[0] != "pixels" else None
        where = f"{row_names} {row + 1}" + (f", column {name!r}" if name else "")
        raise DatasetFileError(
            f"{self.non_finite} missing or non-finite feature value(s) (empty, NaN or inf); "
            f"the first at {where}: fill or drop them before uploading",
            row=row + 1,
            column=name,
            count=self.non_finite,
        )

    def statistics(self) -> list[ColumnStatistics]:
        std = np.sqrt(self.m2 / max(self.rows, 1))
        return [
            ColumnStatistics(
                name=name,
                mean=float(self.mean[i]),
                std=float(std[i]),
                min=float(self.min[i]),
                max=float(self.max[i]),
            )
            for i, name in enumerate(self.names)
        ]


class TargetTally:
    """The target column: its distinct values while they could be classes, its moments while
    it could be a quantity, and where a missing value is."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: Counter[str] = Counter()
        self.too_many_values = False
        self.numeric = True
        self.integral = True
        self.moments = FeatureTally([name])
        self.missing = 0
        self.first_missing: int | None = None

    @property
    def rows(self) -> int:
        return self.moments.rows

    def add(self, values: np.ndarray, missing: np.ndarray) -> None:
        """`values`: the next rows' targets (numbers or strings); `missing`: which are empty."""
        if missing.any():
            self.missing += int(missing.sum())
            if self.first_missing is None:
                self.first_missing = self.rows + int(np.argmax(missing))
        if values.dtype.kind == "b":
            values = values.astype(np.int64)
        if values.dtype.kind in "fiu":
            numbers = values.astype(np.float64)
            if self.integral and not np.array_equal(numbers[~missing], np.round(numbers[~missing])):
                self.integral = False
            self.moments.add(np.where(missing, 0.0, numbers)[:, None])
        else:
            self.numeric = False
            self.moments.rows += len(values)
        if not self.too_many_values:
            present = values[~missing]
            distinct, counts = np.unique(present, return_counts=True)
            for value, count in zip(distinct.tolist(), counts.tolist(), strict=True):
                self.counts[_label(value)] += count
            self.too_many_values = len(self.counts) > MAX_CLASSES

    def conclude(self, task: Task | None) -> tuple[Task, list[str], list[int]]:
        """The task (inferred unless given), class names in index order and their counts."""
        if self.missing:
            raise DatasetFileError(
                f"the target column {self.name!r} has {self.missing} missing value(s); the "
                f"first at row {self.first_missing + 1 if self.first_missing is not None else 0}",
                row=(self.first_missing or 0) + 1,
                column=self.name,
                count=self.missing,
            )
        if self.rows < MIN_ROWS:
            raise DatasetFileError(f"{self.rows} rows; a dataset needs at least {MIN_ROWS}")
        if task is None:
            classes = not self.numeric or (
                self.integral and len(self.counts) <= MAX_INTEGER_CLASSES
            )
            task = "classification" if classes else "regression"
        if task == "regression":
            if not self.numeric:
                raise DatasetFileError(
                    f"the target column {self.name!r} is not numeric, so it cannot be "
                    "regressed; use task=classification",
                    column=self.name,
                )
            return task, [], []
        return task, *self._classes()

    def _classes(self) -> tuple[list[str], list[int]]:
        if self.too_many_values:
            raise DatasetFileError(
                f"the target column {self.name!r} has more than {MAX_CLASSES} distinct values; "
                "too many to be classes (use task=regression for a quantity)",
                column=self.name,
            )
        if len(self.counts) < 2:
            raise DatasetFileError(
                f"the target column {self.name!r} holds one class only; a classifier needs two",
                column=self.name,
            )
        names = sorted(self.counts, key=_class_order) if self.numeric else sorted(self.counts)
        scarce = [name for name in names if self.counts[name] < MIN_ROWS_PER_CLASS]
        if scarce:
            shown = ", ".join(f"{name!r} ({self.counts[name]})" for name in scarce[:5])
            raise DatasetFileError(
                f"too few rows per class: {shown}; each class needs at least "
                f"{MIN_ROWS_PER_CLASS} so that the train, validation and test splits all hold it",
                column=self.name,
                classes=scarce[:20],
            )
        return names, [self.counts[name] for name in names]


def encode_targets(values: np.ndarray, task: Task, class_names: Sequence[str]) -> np.ndarray:
    """Targets as training reads them: class indices (int64) in `class_names` order, or the
    regressed quantity as float64."""
    if values.dtype.kind == "b":
        values = values.astype(np.int64)
    if task == "regression":
        return values.astype(np.float64)
    distinct, inverse = np.unique(values, return_inverse=True)
    index = {name: i for i, name in enumerate(class_names)}
    try:
        codes = np.asarray([index[_label(value)] for value in distinct.tolist()], dtype=np.int64)
    except KeyError as exc:
        raise DatasetFileError(f"target value {exc.args[0]!r} is not one of the classes") from exc
    return codes[inverse.reshape(-1)]


def _label(value: object) -> str:
    # 3.0 and 3 name the same class; numpy's bool prints as True/False.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _class_order(name: str) -> float:
    return float(name)
