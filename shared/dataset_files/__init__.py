"""Dataset files a tenant uploads: checked and described on upload, read back for training.

`inspect_file` streams a CSV, Parquet or NPZ file once, refusing it with a DatasetFileError
that says where it is wrong, and returns its DatasetSchema; `read_file` loads a checked file's
rows the way that schema says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.dataset_files.schema import (
    FORMATS,
    DatasetFileError,
    DatasetSchema,
    Format,
    Task,
)

# The readers (pyarrow, numpy) are imported on first use: a service that only stores schemas
# starts without them, a second sooner.
if TYPE_CHECKING:
    import numpy as np

    from shared.dataset_files.tables import Opener

__all__ = ["FORMATS", "DatasetFileError", "DatasetSchema", "Format", "inspect_file", "read_file"]


def inspect_file(
    open_file: Opener,
    fmt: Format,
    *,
    target: str | None = None,
    task: Task | None = None,
    features: Sequence[str] | None = None,
    categorical: Sequence[str] | None = None,
    delimiter: str = ",",
) -> DatasetSchema:
    from shared.dataset_files.arrays import inspect_npz
    from shared.dataset_files.tables import inspect_table

    if fmt == "npz":
        if target is not None or features is not None or categorical:
            raise DatasetFileError(
                "an NPZ names its arrays itself: drop target, features and categorical"
            )
        return inspect_npz(open_file, task=task)
    return inspect_table(
        open_file,
        fmt,
        target=target,
        task=task,
        features=features,
        categorical=categorical,
        delimiter=delimiter,
    )


def read_file(open_file: Opener, schema: DatasetSchema) -> tuple[np.ndarray, np.ndarray]:
    """(features as float64, rows × features; targets: class indices or float64 values)."""
    from shared.dataset_files.arrays import read_npz
    from shared.dataset_files.tables import read_table

    if schema.format == "npz":
        return read_npz(open_file, schema)
    return read_table(open_file, schema)
