"""Phase 4 quality gates: measured validation results against the workflow's thresholds."""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass
from typing import Any

from shared.contracts import ValidationResult
from shared.spec import GatesSpec
from shared.synthetic import Task


@dataclass(frozen=True)
class GateOutcome:
    name: str
    description: str
    passed: bool
    value: float | str
    threshold: float | str
    comparison: str  # how value is compared with threshold, for the report

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# How a measured value must compare with its threshold, by the sign the report prints.
_COMPARE = {">=": operator.ge, "<": operator.lt, "<=": operator.le}


def phase4_gates(gates: dict[str, Any], task: Task = "classification") -> dict[str, float]:
    """The thresholds phase 4 applies to a model of `task`, out of the spec's gates (defaults
    filled in): accuracy and its train/val gap for a classifier, R² and its gap (and RMSE
    when the spec sets a bound) for a regression model."""
    spec = GatesSpec(**gates)
    if task == "regression":
        rmse = {} if spec.max_rmse is None else {"max_rmse": spec.max_rmse}
        return {
            "min_r2": spec.min_r2,
            **rmse,
            "max_p99_latency_ms": spec.max_p99_latency_ms,
            "max_train_val_r2_gap": spec.max_train_val_r2_gap,
        }
    return {
        "min_accuracy": spec.min_accuracy,
        "max_p99_latency_ms": spec.max_p99_latency_ms,
        "max_train_val_gap": spec.max_train_val_gap,
    }


# What each gate measures: (description, the value out of a result, how it must compare).
_MEASURES: dict[str, tuple[str, str, str]] = {
    "min_accuracy": ("test accuracy", "test.accuracy", ">="),
    "min_r2": ("test R²", "test.r2", ">="),
    "max_rmse": ("test RMSE (target units)", "test.rmse", "<="),
    "max_p99_latency_ms": ("p99 single-row latency (ms)", "latency.p99_ms", "<"),
    "max_train_val_gap": ("train minus validation accuracy", "train_val_gap", "<"),
    "max_train_val_r2_gap": ("train minus validation R²", "train_val_r2_gap", "<"),
}


def _measured(result: ValidationResult, path: str) -> float:
    value: Any = result
    for part in path.split("."):
        value = getattr(value, part)
    assert value is not None, f"a {result.task} result carries {path}"  # see ValidationResult
    return float(value)


def apply_gates(gates: dict[str, Any], result: ValidationResult) -> list[GateOutcome]:
    """Every gate of the result's task with its verdict; `result` is what the validator
    node measured."""
    thresholds = phase4_gates(gates, result.task)
    checks = result.test_suite
    failed_checks = [check.name for check in checks if not check.passed]
    measured = (
        # (gate, what it measures, the measured value, how it must compare)
        (name, _MEASURES[name][0], _measured(result, _MEASURES[name][1]), _MEASURES[name][2])
        for name in thresholds
    )
    return [
        *(
            GateOutcome(
                name=name,
                description=description,
                passed=_COMPARE[comparison](value, thresholds[name]),
                value=value,
                threshold=thresholds[name],
                comparison=comparison,
            )
            for name, description, value, comparison in measured
        ),
        GateOutcome(
            name="test_suite",
            description="model test suite",
            # An empty suite proves nothing, so it cannot pass the gate.
            passed=bool(checks) and not failed_checks,
            value=f"{len(checks) - len(failed_checks)}/{len(checks)} passed"
            + (f"; failed: {', '.join(failed_checks)}" if failed_checks else ""),
            threshold="all checks pass",
            comparison="==",
        ),
    ]


def failed_gate_names(outcomes: list[GateOutcome]) -> list[str]:
    return [outcome.name for outcome in outcomes if not outcome.passed]


def failure_reason(outcomes: list[GateOutcome]) -> str:
    """A one-line reason naming each failed gate with its value and threshold."""
    parts = [_failure(o) for o in outcomes if not o.passed]
    return "quality gates failed: " + ", ".join(parts)


def _failure(outcome: GateOutcome) -> str:
    if isinstance(outcome.value, str):
        return f"{outcome.name} ({outcome.value})"
    return f"{outcome.name} ({outcome.value:.4g} not {outcome.comparison} {outcome.threshold:.4g})"
