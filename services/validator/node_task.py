"""The `validate` task, run inside a validator node process (see shared/node_tasks.py).

Loads the trained model from its safetensors folder, rebuilds the dataset splits training
used (same seed), measures quality, latency and throughput, runs a small test suite and a
sharded-inference consistency check, and reports everything in one `ValidationFinished`.
Every figure here is measured on this node; the validator service only applies the gates.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import numpy as np
import torch

from shared.contracts import ValidateTask, ValidationFinished, ValidationResult
from shared.ml.checkpoint import LoadedModel, load_model
from shared.ml.data import DatasetSplits, load_splits
from shared.ml.evaluate import (
    evaluate,
    evaluate_regression,
    loss_and_accuracy,
    measure_latency,
    overfitting_gap,
    r2_gap,
)
from shared.ml.predictor import PredictionResult, Predictor, RegressionResult
from shared.node_tasks import TaskContext
from shared.telemetry import step

logger = logging.getLogger(__name__)

# Tolerance for comparing probabilities computed in differently sized batches: matrix
# kernels may sum in another order for another row count, which moves the last float bits.
_PROBABILITY_ATOL = 1e-5


def run_validation(payload: dict[str, Any], context: TaskContext) -> None:
    """Measure the model and publish `ValidationFinished`, succeeded or not."""
    torch.set_num_threads(1)  # one thread per node process; see DESIGN.md "Performance habits"
    task = ValidateTask.model_validate(payload)
    started = time.perf_counter()
    if context.cancelled.is_set():
        context.publish(_finished(task, context, succeeded=False, error="cancelled"))
        return
    try:
        # Typed here, on the node: a result missing a figure is this task's failure, reported
        # as such, rather than a message the validator service would have to reject.
        measured = ValidationResult.model_validate(
            {
                **measure_model(task),
                "node_id": context.node.node_id,
                "seconds": time.perf_counter() - started,
            }
        )
    except Exception as exc:
        logger.exception("validation %s failed", task.validation_id)
        event = _finished(task, context, succeeded=False, error=_describe(exc))
    else:
        event = _finished(task, context, succeeded=True, result=measured)
    context.publish(event)


def measure_model(task: ValidateTask) -> dict[str, Any]:
    with step("load model"):
        loaded = load_model(task.model_uri)
    with step("load dataset", dataset=task.dataset):
        splits = load_splits(
            task.dataset,
            seed=task.seed,
            val_fraction=task.val_fraction,
            test_fraction=task.test_fraction,
        )
    if loaded.architecture.input_dim != splits.num_features:
        raise ValueError(
            f"the model expects {loaded.architecture.input_dim} features; "
            f"dataset {task.dataset!r} has {splits.num_features}"
        )
    if loaded.architecture.task != splits.task:
        raise ValueError(
            f"a {loaded.architecture.task} model for {task.dataset!r}, a {splits.task} dataset"
        )
    model = loaded.model
    with step("measure latency", repeats=task.latency_repeats):
        latency = measure_latency(model, splits.x_test, repeats=task.latency_repeats)
    predictor = Predictor(loaded)
    raw_test = splits.x_test_raw
    with step("sharded inference", shards=task.shards):
        sharded = sharded_inference(predictor, raw_test, task.shards)
    with step("evaluate"):
        quality = _quality(loaded, splits)
        test_suite = run_test_suite(loaded, splits, predictor, raw_test, sharded)
    return {
        "dataset": {
            "name": task.dataset,
            "seed": task.seed,
            "val_fraction": task.val_fraction,
            "test_fraction": task.test_fraction,
            "train_rows": len(splits.y_train),
            "val_rows": len(splits.y_val),
            "test_rows": len(splits.y_test),
            "num_features": splits.num_features,
            "class_names": splits.class_names,
        },
        "model": _model_summary(loaded, task.model_uri),
        "task": splits.task,
        **quality,
        "latency": {
            "p50_ms": latency.p50_ms,
            "p95_ms": latency.p95_ms,
            "p99_ms": latency.p99_ms,
            "mean_ms": latency.mean_ms,
            "repeats": latency.repeats,
        },
        "throughput": {
            "batch_size": latency.batch_size,
            "rows_per_second": latency.batch_rows_per_second,
        },
        "distributed_inference": sharded,
        "test_suite": test_suite,
        "torch_version": torch.__version__,
    }


def _quality(loaded: LoadedModel, splits: DatasetSplits) -> dict[str, Any]:
    """The test split's figures and the train/val overfitting gap, as the task measures them."""
    model = loaded.model
    target = loaded.target_normalization
    if target is not None:
        test = evaluate_regression(model, splits.x_test, splits.y_test, target)
        train_r2 = evaluate_regression(model, splits.x_train, splits.y_train, target)["r2"]
        val_r2 = evaluate_regression(model, splits.x_val, splits.y_val, target)["r2"]
        return {
            "test": test,
            "train_r2": train_r2,
            "val_r2": val_r2,
            "train_val_r2_gap": r2_gap(train_r2, val_r2),
        }
    test = evaluate(model, splits.x_test, splits.y_test, splits.class_names)
    _, train_accuracy = loss_and_accuracy(model, splits.x_train, splits.y_train)
    _, val_accuracy = loss_and_accuracy(model, splits.x_val, splits.y_val)
    return {
        "test": test,
        "train_accuracy": train_accuracy,
        "val_accuracy": val_accuracy,
        "train_val_gap": overfitting_gap(train_accuracy, val_accuracy),
    }


def _outputs(result: PredictionResult | RegressionResult) -> np.ndarray:
    """What a prediction is made of: the class probabilities, or the values."""
    if isinstance(result, RegressionResult):
        return np.asarray(result.values, dtype=np.float64)
    return np.asarray(result.probabilities, dtype=np.float64)


def sharded_inference(predictor: Predictor, rows: np.ndarray, shards: int) -> dict[str, Any]:
    """Predict the rows as `shards` separate chunks and compare with one whole-batch pass.

    The chunks run one after another in this process (sharded inference in one process, not
    across nodes): it checks that a row's prediction does not depend on the batch it is in,
    which is what splitting traffic across replicas relies on.
    """
    whole = predictor.answer(rows)
    chunks = [chunk for chunk in np.array_split(rows, shards) if len(chunk)]
    parts = [predictor.answer(chunk) for chunk in chunks]
    checks: dict[str, Any] = {
        "mode": "sharded inference in one process",
        "shards": len(chunks),
        "rows": len(rows),
        "shard_sizes": [len(chunk) for chunk in chunks],
    }
    sharded = np.concatenate([_outputs(part) for part in parts])
    max_diff = float(np.abs(sharded - _outputs(whole)).max())
    target = predictor.loaded.target_normalization
    if target is not None:
        # Compared in the network's standardized units, where the tolerance means what it
        # does for probabilities, whatever the target's scale.
        scaled = max_diff / target.std
        return {
            **checks,
            "max_value_difference": max_diff,
            "passed": scaled <= _PROBABILITY_ATOL,
        }
    assert isinstance(whole, PredictionResult)
    sharded_classes = [c for p in parts if isinstance(p, PredictionResult) for c in p.classes]
    classes_equal = sharded_classes == whole.classes
    return {
        **checks,
        "classes_equal": classes_equal,
        "max_probability_difference": max_diff,
        "passed": classes_equal and max_diff <= _PROBABILITY_ATOL,
    }


def run_test_suite(
    loaded: LoadedModel,
    splits: DatasetSplits,
    predictor: Predictor,
    raw_test: np.ndarray,
    sharded: dict[str, Any],
) -> list[dict[str, Any]]:
    """Checks a model must pass before it may be served; each says what it measured."""
    first, second = predictor.answer(raw_test), predictor.answer(raw_test)
    mean_gap = float(np.abs(loaded.normalization.mean - splits.normalization.mean).max())
    if isinstance(first, RegressionResult):
        values = _outputs(first)
        well_formed = _check(
            "predictions_are_finite",
            bool(np.isfinite(values).all()),
            f"{int(np.isfinite(values).sum())} of {len(values)} values finite",
        )
        agreement = f"max value difference {sharded.get('max_value_difference', 0.0):.2e}"
    else:
        sums = _outputs(first).sum(axis=1)
        worst_sum_error = float(np.abs(sums - 1.0).max())
        well_formed = _check(
            "probabilities_sum_to_one",
            worst_sum_error <= _PROBABILITY_ATOL,
            f"largest deviation from 1: {worst_sum_error:.2e}",
        )
        agreement = f"max probability difference {sharded['max_probability_difference']:.2e}"
    return [
        _check(
            "normalization_matches_training_split",
            mean_gap <= 1e-4,
            f"largest difference of feature means: {mean_gap:.2e}",
        ),
        _check(
            "deterministic_predictions",
            first == second,
            f"two passes over {len(raw_test)} rows compared exactly",
        ),
        well_formed,
        _rejects_wrong_width(predictor),
        _check(
            "sharded_inference_matches_whole_batch",
            sharded["passed"],
            f"{sharded['shards']} shards, {agreement}",
        ),
    ]


def _rejects_wrong_width(predictor: Predictor) -> dict[str, Any]:
    width = predictor.num_features + 1
    try:
        predictor.answer([[0.0] * width])
    except ValueError as exc:
        return _check("rejects_wrong_width_row", True, f"ValueError: {exc}")
    return _check("rejects_wrong_width_row", False, f"a {width}-feature row was accepted")


def _check(name: str, passed: bool, detail: str) -> dict[str, Any]:
    return {"name": name, "passed": bool(passed), "detail": detail}


def _model_summary(loaded: LoadedModel, model_uri: str) -> dict[str, Any]:
    metadata = loaded.metadata
    return {
        "uri": model_uri,
        "architecture": loaded.architecture.to_dict(),
        "parameter_count": metadata.get("parameter_count"),
        "class_names": loaded.class_names,
        "weights_sha256": metadata.get("weights_sha256"),
        "created_at": metadata.get("created_at"),
        "training_metrics": metadata.get("metrics", {}),
    }


def _finished(
    task: ValidateTask,
    context: TaskContext,
    *,
    succeeded: bool,
    error: str | None = None,
    result: ValidationResult | None = None,
) -> ValidationFinished:
    return ValidationFinished(
        workflow_id=task.workflow_id,
        tenant_id=task.tenant_id,
        validation_id=task.validation_id,
        node_id=context.node.node_id,
        succeeded=succeeded,
        error=error,
        result=result,
    )


def _describe(exc: Exception) -> str:
    # The last frame tells an operator where it broke without shipping a whole traceback.
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    location = f" (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{location}"
