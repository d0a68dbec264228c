"""Phase 4's contracts: the `validate` task the validator sends a validator node, and the
typed result the node measures."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.tasks import TaskFinished
from shared.spec import TEST_FRACTION, VAL_FRACTION
from shared.synthetic import Task


class ValidateTask(BaseModel):
    """What the validator service sends in a `validate` task."""

    model_config = ConfigDict(extra="forbid")

    validation_id: uuid.UUID
    workflow_id: uuid.UUID
    tenant_id: str
    model_uri: str
    dataset: str
    seed: int
    val_fraction: float = VAL_FRACTION
    test_fraction: float = TEST_FRACTION
    shards: int = Field(default=4, ge=2)
    latency_repeats: int = Field(default=200, ge=1)


class TestMetrics(BaseModel):
    """On the test split: a classifier's accuracy, loss and macro F1 (plus per-class figures),
    or a regression model's MAE, RMSE and R² in the target's units and its loss (the
    standardized target's MSE)."""

    model_config = ConfigDict(extra="allow")
    __test__ = False  # not a pytest test class

    accuracy: float | None = None
    loss: float
    macro_f1: float | None = None
    mae: float | None = None
    rmse: float | None = None
    r2: float | None = None


class Latency(BaseModel):
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    repeats: int


class Throughput(BaseModel):
    batch_size: int
    rows_per_second: float


class SuiteCheck(BaseModel):
    name: str
    passed: bool
    detail: str


class ValidationResult(BaseModel):
    """Every figure the validator node measured; the validator service only judges them."""

    model_config = ConfigDict(extra="allow")

    dataset: dict[str, Any]
    model: dict[str, Any]
    task: Task = "classification"
    test: TestMetrics
    # Classification: accuracies and their gap; regression: R² of train and val and theirs.
    train_accuracy: float | None = None
    val_accuracy: float | None = None
    train_val_gap: float | None = None
    train_r2: float | None = None
    val_r2: float | None = None
    train_val_r2_gap: float | None = None
    latency: Latency
    throughput: Throughput
    distributed_inference: dict[str, Any]
    test_suite: list[SuiteCheck]
    torch_version: str | None = None
    node_id: str | None = None
    seconds: float | None = None

    @model_validator(mode="after")
    def _figures_of_its_task(self) -> ValidationResult:
        if self.task == "classification":
            needed = {"test.accuracy": self.test.accuracy, "train_val_gap": self.train_val_gap}
        else:
            needed = {"test.r2": self.test.r2, "train_val_r2_gap": self.train_val_r2_gap}
        missing = [name for name, value in needed.items() if value is None]
        if missing:
            raise ValueError(f"a {self.task} result needs {', '.join(missing)}")
        return self

    def headline_metrics(self) -> dict[str, Any]:
        """The figures phase 4 passes on (Phase4Passed, the workflow's detail)."""
        if self.task == "regression":
            quality: dict[str, Any] = {
                "task": "regression",
                "test_r2": self.test.r2,
                "test_mae": self.test.mae,
                "test_rmse": self.test.rmse,
                "test_loss": self.test.loss,
                "train_r2": self.train_r2,
                "val_r2": self.val_r2,
                "train_val_r2_gap": self.train_val_r2_gap,
            }
        else:
            quality = {
                "test_accuracy": self.test.accuracy,
                "test_loss": self.test.loss,
                "macro_f1": self.test.macro_f1,
                "train_accuracy": self.train_accuracy,
                "val_accuracy": self.val_accuracy,
                "train_val_gap": self.train_val_gap,
            }
        return {
            **quality,
            "p50_latency_ms": self.latency.p50_ms,
            "p95_latency_ms": self.latency.p95_ms,
            "p99_latency_ms": self.latency.p99_ms,
            "throughput_rows_per_second": self.throughput.rows_per_second,
        }


class ValidationFinished(TaskFinished):
    """The validator node reports measured results for a validation task; `result` is None
    when the task failed."""

    subject: ClassVar[str] = "nexus.validation.finished"
    validation_id: uuid.UUID
    result: ValidationResult | None = None
