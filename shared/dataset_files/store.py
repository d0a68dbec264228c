"""Where a stored dataset lives: `{location}/data` (the file as uploaded) and
`{location}/schema.json` (its DatasetSchema), so any process that can read the artifact store
— a node, the validator, a generated train.py — loads it from its location alone."""

from __future__ import annotations

import functools
from typing import IO

import fsspec
import numpy as np

from shared.dataset_files.schema import DatasetSchema

DATA_FILE = "data"
SCHEMA_FILE = "schema.json"


def data_url(location: str) -> str:
    return f"{location.rstrip('/')}/{DATA_FILE}"


def schema_url(location: str) -> str:
    return f"{location.rstrip('/')}/{SCHEMA_FILE}"


def opener(url: str) -> functools.partial[IO[bytes]]:
    return functools.partial(_open, url)


def _open(url: str) -> IO[bytes]:
    file: IO[bytes] = fsspec.open(url, "rb").open()
    return file


def write_schema(location: str, schema: DatasetSchema) -> None:
    with fsspec.open(schema_url(location), "w") as f:
        f.write(schema.model_dump_json(indent=2))


def read_schema(location: str) -> DatasetSchema:
    with fsspec.open(schema_url(location), "r") as f:
        return DatasetSchema.model_validate_json(f.read())


def load_stored(location: str) -> tuple[np.ndarray, np.ndarray, DatasetSchema]:
    """A stored dataset's features (float64), encoded targets and schema."""
    from shared.dataset_files import read_file

    schema = read_schema(location)
    x, y = read_file(opener(data_url(location)), schema)
    return x, y, schema
