"""Phase 4's contracts: the `validate` task the validator sends a validator node, and the
typed result the node measures."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.tasks import TaskFinished
from shared.spec import TEST_FRACTION, VAL_FRACTION


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
    """Accuracy, loss and macro F1 on the test split, plus per-class figures."""

    model_config = ConfigDict(extra="allow")
    __test__ = False  # not a pytest test class

    accuracy: float
    loss: float
    macro_f1: float


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
    test: TestMetrics
    train_accuracy: float
    val_accuracy: float
    train_val_gap: float
    latency: Latency
    throughput: Throughput
    distributed_inference: dict[str, Any]
    test_suite: list[SuiteCheck]
    torch_version: str | None = None
    node_id: str | None = None
    seconds: float | None = None

    def headline_metrics(self) -> dict[str, Any]:
        """The figures phase 4 passes on (Phase4Passed, the workflow's detail)."""
        return {
            "test_accuracy": self.test.accuracy,
            "test_loss": self.test.loss,
            "macro_f1": self.test.macro_f1,
            "train_accuracy": self.train_accuracy,
            "val_accuracy": self.val_accuracy,
            "train_val_gap": self.train_val_gap,
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
