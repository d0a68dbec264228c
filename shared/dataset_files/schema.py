"""What Nexus knows about an uploaded dataset file: its schema, inferred in one streamed pass
and stored beside the file, and the errors that refuse a file with where the problem is."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

FORMATS = ("csv", "parquet", "npz")
Format = Literal["csv", "parquet", "npz"]
Task = Literal["classification", "regression"]

# A class needs this many rows so that each of the seeded train, validation and test splits
# (15 % each for the last two) can hold at least one of them.
MIN_ROWS_PER_CLASS = 10
MIN_ROWS = 20
MAX_FEATURES = 65_536
MAX_CLASSES = 1000
MAX_CATEGORIES = 1000
# An integer target with at most this many distinct values is read as class labels; more, and
# it is a quantity to regress (diabetes' progression scores have 214 distinct values).
MAX_INTEGER_CLASSES = 50
# Column names tried, in this order, when the upload does not name its target column.
TARGET_NAMES = ("target", "label", "labels", "class", "y")
PREVIEW_ROWS = 5


class DatasetFileError(ValueError):
    """A file Nexus will not train on: the message says why, `location` says where (the row,
    the column, the array), so a client can point at it."""

    def __init__(self, message: str, **location: Any) -> None:
        super().__init__(message)
        self.location = {key: value for key, value in location.items() if value is not None}

    def to_detail(self) -> dict[str, Any]:
        return {"message": str(self), **({"location": self.location} if self.location else {})}


class ColumnStatistics(BaseModel):
    name: str
    mean: float
    std: float
    min: float
    max: float


class DatasetSchema(BaseModel):
    """The schema of a stored dataset file, read back by every process that trains on it."""

    format: Format
    rows: int
    features: list[str] = Field(description="the feature columns, in the order the model reads")
    target: str
    task: Task
    class_names: list[str] = Field(description="classification: the label of each class index")
    class_counts: list[int] = Field(description="classification: rows of each class")
    categories: dict[str, list[str]] = Field(
        default_factory=dict,
        description="categorical feature columns and their values: a row holds a value's index "
        "in its list (its code), which an embedding layer looks up",
    )
    input_shape: list[int] | None = Field(
        default=None, description="images: how one row's features are laid out, [C, H, W]"
    )
    delimiter: str | None = Field(default=None, description="csv: the field separator")
    statistics: list[ColumnStatistics] = Field(
        description="per numeric feature column (images: one entry for all pixels), then the "
        "target of a regression"
    )
    preview: list[dict[str, Any]] = Field(description=f"the first {PREVIEW_ROWS} rows")
    sha256: str | None = Field(default=None, description="the stored file's checksum")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def categorical_columns(self) -> list[tuple[int, int]]:
        """(feature index, number of categories) of each categorical column."""
        return [(self.features.index(name), len(v)) for name, v in self.categories.items()]
