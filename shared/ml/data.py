"""Bundled tabular datasets, split and normalized the same way for training and serving."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from shared.spec import TEST_FRACTION, VAL_FRACTION, is_stored_dataset
from shared.synthetic import REGRESSION_NOISE, SyntheticDataset, Task, is_synthetic, parse_synthetic

# scikit-learn ships these inside its wheel, so nothing is ever downloaded. It is imported
# only when data is loaded: a model server that merely normalizes rows starts seconds sooner.
_LOADERS: dict[str, str] = {
    "digits": "load_digits",
    "iris": "load_iris",
    "wine": "load_wine",
    "breast_cancer": "load_breast_cancer",
    "diabetes": "load_diabetes",
}
BUNDLED_DATASETS: frozenset[str] = frozenset(_LOADERS)
# The bundled datasets whose target is a real value, not a class.
_REGRESSION = frozenset({"diabetes"})

# A train-constant column (digits has three all-zero pixels) gets std 1 instead of a tiny
# epsilon, as scikit-learn's StandardScaler does: dividing by 1e-6 would turn any non-zero
# value a client sends for that column into a millions-sized input.
_MIN_STD = 1e-6


class UnknownDatasetError(ValueError):
    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(BUNDLED_DATASETS))
        super().__init__(f"unknown dataset {name!r}; bundled datasets are: {known}")
        self.name = name


# eq=False: comparing numpy fields with == is ambiguous, so identity equality is the honest one.
@dataclass(frozen=True, eq=False)
class Normalization:
    """Per-feature standardization fitted on the train split only."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, keep: Sequence[int] = ()) -> Normalization:
        """`keep`: columns passed through as they are (categorical codes, which an embedding
        layer looks up, must reach it whole)."""
        x64 = np.asarray(x, dtype=np.float64)
        std = x64.std(axis=0)
        std = np.where(std < _MIN_STD, 1.0, std)
        mean = x64.mean(axis=0)
        mean[list(keep)], std[list(keep)] = 0.0, 1.0
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32))

    @property
    def num_features(self) -> int:
        return int(self.mean.shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.num_features:
            raise ValueError(f"expected {self.num_features} features, got {x.shape[-1]}")
        return ((x - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, list[float]]) -> Normalization:
        mean = np.asarray(data["mean"], dtype=np.float32)
        std = np.asarray(data["std"], dtype=np.float32)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise ValueError("normalization mean and std must be equal-length lists")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("normalization must be finite with a positive std")
        return cls(mean=mean, std=std)


@dataclass(frozen=True)
class TargetNormalization:
    """A regression target's standardization, fitted on the train split only: the network
    learns `(y - mean) / std`, so its MSE and initial scale do not depend on the target's
    units (diabetes runs 25..346), and predictions are mapped back with `invert`."""

    mean: float
    std: float

    @classmethod
    def fit(cls, y: np.ndarray) -> TargetNormalization:
        y64 = np.asarray(y, dtype=np.float64)
        std = float(y64.std())
        return cls(mean=float(y64.mean()), std=1.0 if std < _MIN_STD else std)

    def apply(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, dtype=np.float64) - self.mean) / self.std).astype(np.float32)

    def invert(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(z, dtype=np.float64) * self.std + self.mean

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> TargetNormalization:
        mean, std = float(data["mean"]), float(data["std"])
        if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
            raise ValueError("target normalization must be finite with a positive std")
        return cls(mean=mean, std=std)


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    # The test rows as a client sends them to a served model: raw values, not normalized.
    x_test_raw: np.ndarray
    num_features: int
    num_classes: int  # 0 for regression
    class_names: list[str]  # empty for regression
    normalization: Normalization
    # Regression: y_* hold the real target values (float32); the network trains on them
    # standardized by target_normalization (fitted on y_train).
    task: Task = "classification"
    target_normalization: TargetNormalization | None = None


def _load_raw(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if is_stored_dataset(name):
        return _load_stored(name)
    return _load_builtin(name)


# A stored dataset can be large, and a node trains one at a time: only the newest is kept.
@lru_cache(maxsize=1)
def _load_stored(location: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from shared.dataset_files.store import load_stored

    x, y, schema = load_stored(location)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y, tuple(schema.class_names)


# The bundled sets and two generated ones (a node trains one dataset at a time).
@lru_cache(maxsize=len(_LOADERS) + 2)
def _load_builtin(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if is_synthetic(name):
        return _generate(parse_synthetic(name))
    if name not in _LOADERS:
        raise UnknownDatasetError(name)
    from sklearn import datasets

    bunch = getattr(datasets, _LOADERS[name])()
    # float64 as shipped, so raw rows handed to clients read as in the dataset (5.1, not
    # float32's 5.099999904632568); training casts to float32.
    x = np.asarray(bunch.data, dtype=np.float64)
    regression = name in _REGRESSION
    y = np.asarray(bunch.target, dtype=np.float64 if regression else np.int64)
    # Cached arrays are shared by every caller, so nobody may modify them in place.
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y, () if regression else tuple(str(c) for c in bunch.target_names)


def dataset_task(name: str) -> Task:
    """Whether a dataset's target is a class or a real value."""
    if is_stored_dataset(name):
        from shared.dataset_files.store import read_schema

        return read_schema(name).task
    if is_synthetic(name):
        return parse_synthetic(name).task
    if name not in _LOADERS:
        raise UnknownDatasetError(name)
    return "regression" if name in _REGRESSION else "classification"


def _generate(dataset: SyntheticDataset) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import make_classification, make_regression

    if dataset.task == "regression":
        x, y = make_regression(
            n_samples=dataset.rows,
            n_features=dataset.features,
            n_informative=dataset.informative,
            noise=REGRESSION_NOISE,
            random_state=dataset.seed,
        )
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        x.flags.writeable = False
        y.flags.writeable = False
        return x, y, ()

    x, y = make_classification(
        n_samples=dataset.rows,
        n_features=dataset.features,
        n_informative=dataset.informative,
        n_redundant=(dataset.features - dataset.informative) // 2,
        n_classes=dataset.classes,
        n_clusters_per_class=1,
        random_state=dataset.seed,
    )
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y, tuple(f"class_{i}" for i in range(dataset.classes))


# The split every phase uses (VAL_FRACTION and TEST_FRACTION, from shared.spec): training,
# validation and the served model's smoke test must all see the same held-out rows for a seed.
def load_splits(
    name: str,
    *,
    seed: int = 42,
    val_fraction: float = VAL_FRACTION,
    test_fraction: float = TEST_FRACTION,
) -> DatasetSplits:
    """Train/val/test splits, deterministic for `seed`, normalized on train stats: stratified
    by class for classification, a plain seeded shuffle for regression (a real-valued target
    has no classes to stratify by)."""
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError("val_fraction and test_fraction must be in (0, 1) and sum below 1")
    from sklearn.model_selection import train_test_split

    raw, y, class_names = _load_raw(name)
    task = dataset_task(name)
    classes = task == "classification"
    # Split row indices (the shuffle depends only on the labels and the seed), so the raw
    # test rows come along without a second pass over the data.
    rest, test = train_test_split(
        np.arange(len(y)),
        test_size=test_fraction,
        stratify=y if classes else None,
        random_state=seed,
    )
    # The second split sees only the remainder, so rescale val_fraction to the whole dataset.
    train, val = train_test_split(
        rest,
        test_size=val_fraction / (1 - test_fraction),
        stratify=y[rest] if classes else None,
        random_state=seed,
    )
    categorical = [index for index, _ in categorical_columns(name)]
    return splits_of(
        name, raw, y, class_names, train, val, test, task=task, categorical=categorical
    )


def splits_of(
    name: str,
    raw: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    train: np.ndarray,
    val: np.ndarray,
    test: np.ndarray,
    *,
    task: Task = "classification",
    categorical: Sequence[int] = (),
) -> DatasetSplits:
    """The splits of (raw, y) at the given row indices, normalized on the training rows (a
    regression target too: `target_normalization`, with y kept in its real units; the
    `categorical` columns' codes not at all)."""
    x = raw.astype(np.float32)
    normalization = Normalization.fit(x[train], keep=categorical)
    target: TargetNormalization | None = None
    if task == "regression":
        y = np.asarray(y, dtype=np.float32)
        target = TargetNormalization.fit(y[train])
        if class_names:
            raise ValueError("a regression dataset has no class names")
    return DatasetSplits(
        name=name,
        x_train=normalization.apply(x[train]),
        y_train=y[train],
        x_val=normalization.apply(x[val]),
        y_val=y[val],
        x_test=normalization.apply(x[test]),
        y_test=y[test],
        x_test_raw=raw[test],
        num_features=int(x.shape[1]),
        num_classes=len(class_names),
        class_names=list(class_names),
        normalization=normalization,
        task=task,
        target_normalization=target,
    )


def load_raw(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """A dataset's rows as shipped or generated (read-only, shared), its labels and class names."""
    return _load_raw(name)


def categorical_columns(name: str) -> list[tuple[int, int]]:
    """(feature index, number of categories) of each categorical column: a stored dataset
    declares them at upload; the built-ins have none."""
    if not is_stored_dataset(name):
        return []
    from shared.dataset_files.store import read_schema

    return read_schema(name).categorical_columns()


def describe_dataset(name: str) -> dict[str, Any]:
    """Size and shape of a dataset, for listings, the network's design and dataset.json."""
    x, _, class_names = _load_raw(name)
    described = {
        "name": name,
        "task": dataset_task(name),
        "samples": int(x.shape[0]),
        "features": int(x.shape[1]),
        "classes": len(class_names),
        "class_names": list(class_names),
    }
    categorical = categorical_columns(name)
    return described | ({"categorical": categorical} if categorical else {})
