"""NPZ files: a feature array (rows × features, or images N×H×W / N×C×H×W) and a label array.
Loaded without pickle, so a file can hold numbers and strings only, never code."""

from __future__ import annotations

import math
import zipfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from shared.dataset_files.schema import (
    MAX_FEATURES,
    PREVIEW_ROWS,
    DatasetFileError,
    DatasetSchema,
    Task,
)
from shared.dataset_files.tally import FeatureTally, TargetTally, encode_targets

Opener = Callable[[], IO[bytes]]
FEATURE_KEYS = ("x", "X", "images", "features", "data")
TARGET_KEYS = ("y", "Y", "labels", "targets", "target")
_CHUNK_ROWS = 65_536
_PREVIEW_FEATURES = 50


def inspect_npz(open_file: Opener, *, task: Task | None) -> DatasetSchema:
    x, y, x_key, y_key = _arrays(open_file)
    rows = x.shape[0]
    image = x.ndim > 2
    input_shape = [1, *x.shape[1:]] if x.ndim == 3 else list(x.shape[1:]) if image else None
    width = math.prod(x.shape[1:])
    names = ["pixels"] if image else [f"{x_key}[{i}]" for i in range(width)]
    features, targets = FeatureTally(names), TargetTally(y_key)
    for start in range(0, rows, _CHUNK_ROWS):
        block = x[start : start + _CHUNK_ROWS].reshape(-1, width).astype(np.float64)
        features.add(block.reshape(-1, 1) if image else block)
        chunk = y[start : start + _CHUNK_ROWS]
        targets.add(chunk, _missing(chunk))
    if image:
        _check_images_finite(features, width)
    else:
        features.check_finite()
    task, class_names, class_counts = targets.conclude(task)
    statistics = features.statistics()
    if image:
        statistics[0] = statistics[0].model_copy(update={"name": x_key})
    if task == "regression":
        statistics += targets.moments.statistics()
    flat = x[:PREVIEW_ROWS].reshape(-1, width)[:, :_PREVIEW_FEATURES]
    labels = y[:PREVIEW_ROWS].tolist()
    preview = [{x_key: row.tolist(), y_key: label} for row, label in zip(flat, labels, strict=True)]
    return DatasetSchema(
        format="npz",
        rows=rows,
        features=[f"{x_key}[{i}]" for i in range(width)],
        target=y_key,
        task=task,
        class_names=class_names,
        class_counts=class_counts,
        input_shape=input_shape,
        statistics=statistics,
        preview=preview,
    )


def read_npz(open_file: Opener, schema: DatasetSchema) -> tuple[np.ndarray, np.ndarray]:
    x, y, _, _ = _arrays(open_file)
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    return flat, encode_targets(y, schema.task, schema.class_names)


def _arrays(open_file: Opener) -> tuple[np.ndarray, np.ndarray, str, str]:
    with open_file() as f:
        if not zipfile.is_zipfile(f):
            raise DatasetFileError("not a readable NPZ file: it is not a zip archive")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as archive:
                arrays: dict[str, Any] = {key: archive[key] for key in archive.files}
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise DatasetFileError(f"not a readable NPZ file: {exc}") from exc
        except ValueError as exc:  # an object array, which only pickle could load
            raise DatasetFileError(f"the NPZ holds an array that needs pickle: {exc}") from exc
    if "x_train" in arrays and "y_train" in arrays and not set(FEATURE_KEYS) & set(arrays):
        # Split as published (MNIST's x_train/x_test): one pool, which Nexus splits itself.
        parts = [key for key in ("train", "test") if f"x_{key}" in arrays and f"y_{key}" in arrays]
        arrays["x"] = np.concatenate([arrays[f"x_{key}"] for key in parts])
        arrays["y"] = np.concatenate([arrays[f"y_{key}"] for key in parts])
    x_key = next((key for key in FEATURE_KEYS if key in arrays), None)
    y_key = next((key for key in TARGET_KEYS if key in arrays), None)
    if x_key is None or y_key is None:
        raise DatasetFileError(
            f"the NPZ needs a feature array (one of {', '.join(FEATURE_KEYS)}) and a label array "
            f"(one of {', '.join(TARGET_KEYS)}), or x_train and y_train; it has: "
            f"{', '.join(arrays) or 'nothing'}"
        )
    x, y = arrays[x_key], arrays[y_key]
    if x.dtype.kind not in "fiub":
        raise DatasetFileError(f"array {x_key!r} is {x.dtype}, not numbers", array=x_key)
    if not 2 <= x.ndim <= 4:
        raise DatasetFileError(
            f"array {x_key!r} has shape {x.shape}; expected rows × features, N×H×W or N×C×H×W",
            array=x_key,
        )
    if math.prod(x.shape[1:]) > MAX_FEATURES:
        raise DatasetFileError(
            f"array {x_key!r} has {math.prod(x.shape[1:])} values per row; at most {MAX_FEATURES}",
            array=x_key,
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise DatasetFileError(
            f"array {y_key!r} has shape {y.shape}; expected one label per row of {x_key!r} "
            f"({x.shape[0]},)",
            array=y_key,
        )
    if y.dtype.kind not in "fiubU":
        raise DatasetFileError(f"array {y_key!r} is {y.dtype}, not numbers or text", array=y_key)
    return x, y, x_key, y_key


def _missing(labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind == "f":
        return np.asarray(~np.isfinite(labels))
    if labels.dtype.kind == "U":
        return np.asarray(labels == "")
    return np.zeros(labels.shape, dtype=bool)


def _check_images_finite(pixels: FeatureTally, width: int) -> None:
    """Image values were tallied as one column; give the first bad one as image and pixel."""
    if pixels.first_non_finite is None:
        return
    flat_index = pixels.first_non_finite[0]
    image, pixel = divmod(flat_index, width)
    raise DatasetFileError(
        f"{pixels.non_finite} non-finite pixel value(s) (NaN or inf); the first in image "
        f"{image + 1}, pixel {pixel}",
        row=image + 1,
        pixel=pixel,
        count=pixels.non_finite,
    )
