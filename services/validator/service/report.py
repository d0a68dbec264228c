"""The files phase 4 leaves in a workflow's project: the performance report (markdown), the
re-runnable `neural/tests/validation.py`, and `neural/configs/validation.json` it reads."""

from __future__ import annotations

import json
import string
from datetime import datetime
from pathlib import Path
from typing import Any

from services.validator.service.gates import GateOutcome

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def validation_config(result: dict[str, Any], gates: dict[str, float]) -> dict[str, Any]:
    """What validation.py needs to rebuild the same split and apply the same gates."""
    dataset = result["dataset"]
    return {
        "dataset": dataset["name"],
        "task": result.get("task", "classification"),
        "seed": dataset["seed"],
        "val_fraction": dataset["val_fraction"],
        "test_fraction": dataset["test_fraction"],
        "gates": gates,
    }


def render_validation_script(workflow_id: object, validation_id: object, at: datetime) -> str:
    template = string.Template((TEMPLATES / "validation.py.tmpl").read_text())
    return template.substitute(
        workflow_id=workflow_id, validation_id=validation_id, generated_at=at.isoformat()
    )


def render_report(
    *,
    workflow_id: object,
    validation_id: object,
    result: dict[str, Any],
    outcomes: list[GateOutcome],
    at: datetime,
) -> str:
    passed = all(o.passed for o in outcomes)
    sections = [
        f"# Performance report: workflow {workflow_id}",
        f"Generated {at.isoformat()} by the Nexus validator for validation `{validation_id}` "
        f"on node `{result.get('node_id', '?')}`.\n\n"
        f"**Outcome: {'PASSED' if passed else 'FAILED'}** "
        f"({sum(o.passed for o in outcomes)}/{len(outcomes)} gates pass)",
        _gates(outcomes),
        _model(result["model"]),
        _dataset(result["dataset"]),
        *_quality(result),
        _latency(result["latency"], result["throughput"]),
        _sharded(result["distributed_inference"]),
        _test_suite(result["test_suite"]),
        "All figures were measured on the validator node with torch "
        f"{result.get('torch_version', '?')}, one thread, in "
        f"{result.get('seconds', 0.0):.2f} s. Re-check them with `python validation.py` "
        "in `neural/tests/`.",
    ]
    return "\n\n".join(sections) + "\n"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: float | str) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _gates(outcomes: list[GateOutcome]) -> str:
    rows = [
        [
            f"`{o.name}`",
            o.description,
            _fmt(o.value),
            f"{o.comparison} {o.threshold:g}" if isinstance(o.threshold, float) else o.threshold,
            "PASS" if o.passed else "FAIL",
        ]
        for o in outcomes
    ]
    return "## Quality gates\n\n" + _table(
        ["gate", "measures", "measured", "threshold", "result"], rows
    )


def _model(model: dict[str, Any]) -> str:
    from shared.ml.architecture import Architecture

    described = Architecture.model_validate(model["architecture"]).describe()
    return (
        "## Model\n\n"
        f"- Location: `{model['uri']}`\n"
        f"- Architecture: {described}\n"
        f"- Parameters: {model.get('parameter_count')}\n"
        f"- Weights sha256: `{model.get('weights_sha256')}`\n"
        f"- Saved at: {model.get('created_at')}"
    )


def _dataset(dataset: dict[str, Any]) -> str:
    return (
        "## Dataset\n\n"
        f"- Name: `{dataset['name']}` (split seed {dataset['seed']})\n"
        f"- Rows: {dataset['train_rows']} train / {dataset['val_rows']} validation / "
        f"{dataset['test_rows']} test\n"
        f"- Features: {dataset['num_features']}; "
        + (f"classes: {len(classes)}" if (classes := dataset["class_names"]) else "target: a value")
    )


def _quality(result: dict[str, Any]) -> list[str]:
    if result.get("task") == "regression":
        return [_regression(result)]
    return [_accuracy(result), _per_class(result["test"]["per_class"]), _confusion(result["test"])]


def _regression(result: dict[str, Any]) -> str:
    test = result["test"]
    rows = [
        ["train", _fmt(result["train_r2"])],
        ["validation", _fmt(result["val_r2"])],
        ["test", _fmt(test["r2"])],
    ]
    return (
        "## Regression quality\n\n"
        + _table(["split", "R²"], rows)
        + f"\n\nTest split, in the target's units: MAE {test['mae']:.4g} · RMSE "
        f"{test['rmse']:.4g} · loss (MSE of the standardized target) {test['loss']:.4f}. "
        f"Train/validation R² gap: {result['train_val_r2_gap']:+.4f}"
    )


def _accuracy(result: dict[str, Any]) -> str:
    test = result["test"]
    rows = [
        ["train", _fmt(result["train_accuracy"])],
        ["validation", _fmt(result["val_accuracy"])],
        ["test", _fmt(test["accuracy"])],
    ]
    return (
        "## Accuracy\n\n"
        + _table(["split", "accuracy"], rows)
        + f"\n\nTrain/validation gap: {result['train_val_gap']:+.4f} · test loss "
        f"{test['loss']:.4f} · macro F1 {test['macro_f1']:.4f}"
    )


def _per_class(per_class: list[dict[str, Any]]) -> str:
    rows = [
        [c["name"], _fmt(c["precision"]), _fmt(c["recall"]), _fmt(c["f1"]), c["support"]]
        for c in per_class
    ]
    return "## Per-class metrics (test split)\n\n" + _table(
        ["class", "precision", "recall", "F1", "support"], rows
    )


def _confusion(test: dict[str, Any]) -> str:
    names = [c["name"] for c in test["per_class"]]
    rows = [[f"**{names[i]}**", *row] for i, row in enumerate(test["confusion_matrix"])]
    return (
        "## Confusion matrix (test split; rows are true classes, columns predictions)\n\n"
        + _table(["true \\ predicted", *names], rows)
    )


def _latency(latency: dict[str, Any], throughput: dict[str, Any]) -> str:
    row = [f"{latency[k]:.4f}" for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")]
    return (
        f"## Latency (single row, {latency['repeats']} timed forward passes)\n\n"
        + _table(["p50 (ms)", "p95 (ms)", "p99 (ms)", "mean (ms)"], [row])
        + f"\n\n## Throughput\n\nBatches of {throughput['batch_size']} rows: "
        f"{throughput['rows_per_second']:,.0f} rows/s"
    )


def _sharded(sharded: dict[str, Any]) -> str:
    verdict = "identical" if sharded["passed"] else "DIFFERENT"
    if "max_value_difference" in sharded:
        largest = f"largest value difference {sharded['max_value_difference']:.2e}"
    else:
        largest = f"largest probability difference {sharded['max_probability_difference']:.2e}"
    return (
        "## Distributed inference\n\n"
        f"The {sharded['rows']} test rows were predicted as {sharded['shards']} shards "
        f"({', '.join(map(str, sharded['shard_sizes']))} rows; {sharded['mode']}) and as one "
        f"batch: predictions {verdict}, {largest}."
    )


def _test_suite(checks: list[dict[str, Any]]) -> str:
    rows = [[c["name"], "PASS" if c["passed"] else "FAIL", c["detail"]] for c in checks]
    return "## Test suite\n\n" + _table(["check", "result", "detail"], rows)


def dumps_config(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"
