"""Phase 4 gate logic: each gate passes or fails on its own threshold and is named."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.validator.service.gates import (
    apply_gates,
    failed_gate_names,
    failure_reason,
    phase4_gates,
)
from shared.contracts import ValidationResult

GATES = {"min_accuracy": 0.9, "max_p99_latency_ms": 10.0, "max_train_val_gap": 0.05}


def result(
    accuracy: float = 0.95, p99: float = 1.0, gap: float = 0.01, checks: list[bool] | None = None
) -> ValidationResult:
    """A measured result with the figures the gates read; the others are placeholders."""
    return ValidationResult.model_validate(
        {
            "dataset": {},
            "model": {},
            "test": {"accuracy": accuracy, "loss": 0.1, "macro_f1": accuracy},
            "train_accuracy": 0.99,
            "val_accuracy": 0.99 - gap,
            "train_val_gap": gap,
            "latency": {"p50_ms": p99, "p95_ms": p99, "p99_ms": p99, "mean_ms": p99, "repeats": 1},
            "throughput": {"batch_size": 1, "rows_per_second": 1.0},
            "distributed_inference": {},
            "test_suite": [
                {"name": f"check_{i}", "passed": ok, "detail": ""}
                for i, ok in enumerate(checks if checks is not None else [True, True])
            ],
        }
    )


def test_a_good_result_passes_every_gate() -> None:
    outcomes = apply_gates(GATES, result())
    assert [o.name for o in outcomes] == [
        "min_accuracy",
        "max_p99_latency_ms",
        "max_train_val_gap",
        "test_suite",
    ]
    assert failed_gate_names(outcomes) == []


def test_thresholds_are_inclusive_for_accuracy_and_strict_for_latency_and_gap() -> None:
    at_edges = result(accuracy=0.9, p99=10.0, gap=0.05)
    assert failed_gate_names(apply_gates(GATES, at_edges)) == [
        "max_p99_latency_ms",
        "max_train_val_gap",
    ]


@pytest.mark.parametrize(
    ("measured", "failed"),
    [
        (result(accuracy=0.89), "min_accuracy"),
        (result(p99=12.5), "max_p99_latency_ms"),
        (result(gap=0.08), "max_train_val_gap"),
        (result(checks=[True, False]), "test_suite"),
        (result(checks=[]), "test_suite"),  # an empty suite proves nothing
    ],
)
def test_each_failing_gate_is_named_in_the_reason(measured: dict[str, Any], failed: str) -> None:
    outcomes = apply_gates(GATES, measured)
    assert failed_gate_names(outcomes) == [failed]
    assert failed in failure_reason(outcomes)


def test_the_reason_names_every_failed_gate_with_value_and_threshold() -> None:
    outcomes = apply_gates(GATES, result(accuracy=0.5, gap=0.2, checks=[False]))
    reason = failure_reason(outcomes)
    assert reason.startswith("quality gates failed: ")
    assert "min_accuracy (0.5 not >= 0.9)" in reason
    assert "max_train_val_gap (0.2 not < 0.05)" in reason
    assert "test_suite (0/1 passed; failed: check_0)" in reason
    assert "max_p99_latency_ms" not in reason


def test_a_negative_gap_passes() -> None:
    assert failed_gate_names(apply_gates(GATES, result(gap=-0.03))) == []


def test_missing_gates_take_the_platform_defaults() -> None:
    assert phase4_gates({}) == {
        "min_accuracy": 0.85,
        "max_p99_latency_ms": 100.0,
        "max_train_val_gap": 0.05,
    }
    assert phase4_gates({**GATES, "min_nodes": 4}) == GATES


def test_a_result_missing_figures_is_refused() -> None:
    with pytest.raises(ValidationError, match="latency"):
        ValidationResult.model_validate({"test": {"accuracy": 0.9}})


def regression_result(
    r2: float = 0.5, rmse: float = 55.0, gap: float = 0.05, p99: float = 1.0
) -> ValidationResult:
    return ValidationResult.model_validate(
        {
            "dataset": {},
            "model": {},
            "task": "regression",
            "test": {"loss": 0.5, "r2": r2, "mae": rmse * 0.8, "rmse": rmse},
            "train_r2": 0.55,
            "val_r2": 0.55 - gap,
            "train_val_r2_gap": gap,
            "latency": {"p50_ms": p99, "p95_ms": p99, "p99_ms": p99, "mean_ms": p99, "repeats": 1},
            "throughput": {"batch_size": 1, "rows_per_second": 1.0},
            "distributed_inference": {},
            "test_suite": [{"name": "check", "passed": True, "detail": ""}],
        }
    )


def test_a_regression_result_is_judged_by_r2_not_accuracy() -> None:
    outcomes = apply_gates({}, regression_result())
    assert [o.name for o in outcomes] == [
        "min_r2",
        "max_p99_latency_ms",
        "max_train_val_r2_gap",
        "test_suite",
    ]
    assert failed_gate_names(outcomes) == []


@pytest.mark.parametrize(
    ("gates", "measured", "failed"),
    [
        ({}, regression_result(r2=0.29), ["min_r2"]),
        ({"min_r2": 0.6}, regression_result(r2=0.55), ["min_r2"]),
        ({}, regression_result(gap=0.25), ["max_train_val_r2_gap"]),
        ({"max_rmse": 50.0}, regression_result(rmse=55.0), ["max_rmse"]),
        ({"max_rmse": 60.0}, regression_result(rmse=55.0), []),
        ({}, regression_result(r2=-0.4, gap=0.9), ["min_r2", "max_train_val_r2_gap"]),
    ],
)
def test_regression_gates_pass_and_fail_on_their_thresholds(
    gates: dict[str, Any], measured: ValidationResult, failed: list[str]
) -> None:
    outcomes = apply_gates(gates, measured)
    assert failed_gate_names(outcomes) == failed
    for name in failed:
        assert name in failure_reason(outcomes)


def test_regression_thresholds_default_to_the_platform_and_rmse_only_when_set() -> None:
    assert phase4_gates({}, "regression") == {
        "min_r2": 0.3,
        "max_p99_latency_ms": 100.0,
        "max_train_val_r2_gap": 0.2,
    }
    assert phase4_gates({"max_rmse": 70.0}, "regression")["max_rmse"] == 70.0
    reason = failure_reason(apply_gates({"max_rmse": 50.0}, regression_result(rmse=55.0)))
    assert "max_rmse (55 not <= 50)" in reason


def test_a_result_must_carry_the_figures_of_its_task() -> None:
    body = regression_result().model_dump()
    with pytest.raises(ValidationError, match=r"a regression result needs test.r2"):
        ValidationResult.model_validate({**body, "test": {"loss": 0.5}})
    with pytest.raises(ValidationError, match="a classification result needs test.accuracy"):
        ValidationResult.model_validate({**body, "task": "classification"})
