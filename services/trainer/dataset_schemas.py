"""Request options and responses of the trainer's dataset routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field

from services.trainer.schemas import DatasetOut
from shared.dataset_files import DatasetSchema, Format, Task

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class DatasetOptions(BaseModel):
    """How to read an upload or import; whatever is left out is inferred from the file."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option is refused, not ignored

    name: str | None = Field(default=None, min_length=1, max_length=100, pattern=_NAME)
    format: Format | None = Field(default=None, description="default: from the file name")
    target: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="the column to predict; default: target, label, labels, class or y, "
        "else the last column",
    )
    task: Task | None = Field(
        default=None,
        description="default: classification for text or integer labels with at most 50 "
        "values, regression otherwise",
    )
    features: str | None = Field(
        default=None,
        max_length=100_000,
        description="comma-separated feature columns; default: every column but the target",
    )
    categorical: str | None = Field(
        default=None,
        max_length=100_000,
        description="comma-separated feature columns holding categories (text or codes): each "
        "value becomes its index in the column's sorted values, for an embedding layer",
    )
    delimiter: str = Field(
        default=",", min_length=1, max_length=1, pattern=r"^[^\r\n\"]$", description="CSV only"
    )

    def feature_list(self) -> list[str] | None:
        return _names(self.features)

    def categorical_list(self) -> list[str] | None:
        return _names(self.categorical)


def _names(listed: str | None) -> list[str] | None:
    if listed is None:
        return None
    return [name.strip() for name in listed.split(",") if name.strip()]


DatasetOptionsQuery = Annotated[DatasetOptions, Query()]


class ImportRequest(BaseModel):
    url: str = Field(
        min_length=1,
        max_length=2000,
        description="an fsspec URL under one of the service's dataset_url_prefixes",
    )


class StoredDatasetSummary(BaseModel):
    id: uuid.UUID
    name: str
    format: Format
    task: Task
    rows: int
    features: int
    classes: int
    size_bytes: int
    created_at: datetime


class StoredDatasetOut(BaseModel):
    id: uuid.UUID
    name: str
    format: Format
    source: str = Field(description="upload, or the URL it was imported from")
    location: str = Field(description="where its file and schema are stored")
    size_bytes: int
    sha256: str
    created_at: datetime
    dataset_schema: DatasetSchema = Field(
        serialization_alias="schema",
        description="columns, task, classes, statistics and a preview",
    )


class DatasetCatalogOut(BaseModel):
    datasets: list[DatasetOut] = Field(description="the built-in datasets")
    uploaded: list[StoredDatasetSummary] = Field(description="the tenant's own, newest first")
