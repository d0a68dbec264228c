"""The `validate` node task on a real trained model: every figure measured, none invented."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.validator.node_task import run_validation, sharded_inference
from shared.ml.checkpoint import MODEL_METADATA
from shared.ml.data import load_splits
from shared.ml.predictor import Predictor
from tests.services.validator.conftest import SEED, MeasuredValidation, validation_payload
from tests.services.validator.support import RecordingContext


def test_validation_reports_plausible_measured_figures(measured: MeasuredValidation) -> None:
    event = measured.event
    assert event.succeeded, event.error
    assert str(event.validation_id) == measured.payload["validation_id"]
    result = event.result.model_dump(mode="json")
    test = result["test"]
    assert test["accuracy"] > 0.8
    assert test["num_samples"] == result["dataset"]["test_rows"] == 270
    assert len(test["per_class"]) == 10
    matrix = np.asarray(test["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 270
    assert np.trace(matrix) / matrix.sum() == test["accuracy"]
    assert 0.8 < result["train_accuracy"] <= 1.0 and 0.8 < result["val_accuracy"] <= 1.0
    assert result["train_val_gap"] == result["train_accuracy"] - result["val_accuracy"]
    latency = result["latency"]
    assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"]
    assert latency["repeats"] == 200
    assert result["throughput"]["rows_per_second"] > 0
    assert result["model"]["architecture"]["hidden_layers"] == [128, 64]


def test_test_suite_and_sharded_inference_pass_on_a_sound_model(
    measured: MeasuredValidation,
) -> None:
    result = measured.event.result.model_dump(mode="json")
    checks = {check["name"]: check for check in result["test_suite"]}
    assert set(checks) == {
        "normalization_matches_training_split",
        "deterministic_predictions",
        "probabilities_sum_to_one",
        "rejects_wrong_width_row",
        "sharded_inference_matches_whole_batch",
    }
    assert all(check["passed"] for check in checks.values()), checks
    sharded = result["distributed_inference"]
    assert sharded["shards"] == 4 and sum(sharded["shard_sizes"]) == 270
    assert sharded["classes_equal"] and sharded["passed"]


def test_sharded_inference_compares_with_the_whole_batch(digits_model: Path) -> None:
    predictor = Predictor.from_path(digits_model)
    splits = load_splits("digits", seed=SEED)
    rows = splits.x_test_raw
    outcome = sharded_inference(predictor, rows, shards=7)
    assert outcome["shards"] == 7 and outcome["rows"] == len(rows)
    assert outcome["passed"] and outcome["max_probability_difference"] <= 1e-5


def test_a_split_with_another_seed_fails_the_normalization_check(digits_model: Path) -> None:
    context = RecordingContext()
    run_validation(
        validation_payload(str(digits_model), seed=SEED + 1, latency_repeats=20), context
    )
    (event,) = context.published
    assert event.succeeded
    checks = {c["name"]: c["passed"] for c in event.result.model_dump()["test_suite"]}
    assert checks["normalization_matches_training_split"] is False


def test_a_missing_model_is_reported_as_a_failed_task(tmp_path: Path) -> None:
    context = RecordingContext()
    run_validation(validation_payload(str(tmp_path / "nothing")), context)
    (event,) = context.published
    assert not event.succeeded and event.result is None
    assert "FileNotFoundError" in (event.error or "") and MODEL_METADATA in (event.error or "")


def test_a_model_for_another_dataset_is_reported_as_a_failed_task(digits_model: Path) -> None:
    context = RecordingContext()
    run_validation(validation_payload(str(digits_model), dataset="iris"), context)
    (event,) = context.published
    assert not event.succeeded
    assert "expects 64 features" in (event.error or "")


def test_a_cancelled_task_reports_without_measuring(digits_model: Path) -> None:
    context = RecordingContext()
    context.cancelled.set()
    run_validation(validation_payload(str(digits_model)), context)
    (event,) = context.published
    assert not event.succeeded and event.error == "cancelled"


def test_a_regression_model_is_measured_by_r2_mae_and_rmse(
    measured_regression: MeasuredValidation,
) -> None:
    event = measured_regression.event
    assert event.succeeded, event.error
    result = event.result
    assert result.task == "regression"
    test = result.test
    assert test.accuracy is None and test.macro_f1 is None
    assert test.r2 is not None and test.r2 > 0.3
    # In diabetes's units (targets 25..346), not the network's standardized ones.
    assert test.mae is not None and test.rmse is not None and 20 < test.mae < test.rmse < 100
    assert result.train_accuracy is None and result.train_val_gap is None
    assert result.train_r2 is not None and result.val_r2 is not None
    assert result.train_val_r2_gap == result.train_r2 - result.val_r2
    checks = {check.name: check for check in result.test_suite}
    assert set(checks) == {
        "normalization_matches_training_split",
        "deterministic_predictions",
        "predictions_are_finite",
        "rejects_wrong_width_row",
        "sharded_inference_matches_whole_batch",
    }
    assert all(check.passed for check in checks.values()), checks
    sharded = result.distributed_inference
    assert sharded["passed"] and sum(sharded["shard_sizes"]) == 67
    assert "max_value_difference" in sharded and "classes_equal" not in sharded
    headline = result.headline_metrics()
    assert headline["test_r2"] == test.r2 and "test_accuracy" not in headline


def test_a_regression_model_for_a_classification_dataset_fails_the_task(
    diabetes_model: Path,
) -> None:
    # The same ten features, so it is the task that does not fit.
    dataset = "synthetic_classification?features=10"
    context = RecordingContext()
    run_validation(validation_payload(f"file://{diabetes_model}", dataset=dataset), context)
    (event,) = context.published
    assert not event.succeeded
    assert "a regression model for" in (event.error or ""), event.error
