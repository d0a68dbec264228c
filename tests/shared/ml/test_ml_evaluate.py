from typing import Any

import numpy as np
import pytest

from shared.ml.evaluate import evaluate, loss_and_accuracy, measure_latency, overfitting_gap


def test_evaluate_reports_consistent_metrics(trained_digits: Any) -> None:
    splits = trained_digits.splits
    report = evaluate(trained_digits.model, splits.x_test, splits.y_test, splits.class_names)
    matrix = np.asarray(report["confusion_matrix"])
    assert matrix.shape == (10, 10)
    assert matrix.sum() == report["num_samples"] == len(splits.y_test)
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    _, accuracy = loss_and_accuracy(trained_digits.model, splits.x_test, splits.y_test)
    assert report["accuracy"] == pytest.approx(accuracy)
    assert [c["name"] for c in report["per_class"]] == splits.class_names
    assert sum(c["support"] for c in report["per_class"]) == len(splits.y_test)
    for c in report["per_class"]:
        assert 0 <= c["precision"] <= 1
        assert 0 <= c["recall"] <= 1
        assert c["recall"] == pytest.approx(matrix[c["class"], c["class"]] / c["support"])


def test_measuring_keeps_the_callers_mode(trained_digits: Any) -> None:
    model = trained_digits.model
    model.train()
    try:
        loss_and_accuracy(model, trained_digits.splits.x_val, trained_digits.splits.y_val)
        assert model.training
    finally:
        model.eval()


def test_latency_stats_are_positive_and_ordered(trained_digits: Any) -> None:
    stats = measure_latency(
        trained_digits.model, trained_digits.splits.x_test, repeats=100, warmup=10
    )
    assert 0 < stats.p50_ms <= stats.p95_ms <= stats.p99_ms
    assert stats.mean_ms > 0
    assert stats.batch_size == 256
    assert stats.batch_rows_per_second > 0


def test_latency_rejects_bad_input(trained_digits: Any) -> None:
    with pytest.raises(ValueError, match="2-D"):
        measure_latency(trained_digits.model, np.zeros(64, dtype=np.float32))
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(trained_digits.model, trained_digits.splits.x_test, repeats=0)


def test_overfitting_gap() -> None:
    assert overfitting_gap(0.99, 0.95) == pytest.approx(0.04)
    assert overfitting_gap(0.9, 0.92) == pytest.approx(-0.02)
    with pytest.raises(ValueError, match="val_accuracy"):
        overfitting_gap(0.9, 1.5)


def test_regression_scores_on_known_values() -> None:
    from shared.ml.scores import regression_scores

    truth = np.array([1.0, 2.0, 3.0, 4.0])
    assert regression_scores(truth, truth) == {"mae": 0.0, "rmse": 0.0, "r2": 1.0}
    # Predicting the mean explains nothing; predicting off by 1 everywhere: MAE = RMSE = 1.
    assert regression_scores(np.full(4, 2.5), truth)["r2"] == pytest.approx(0.0)
    off = regression_scores(truth + 1, truth)
    assert (off["mae"], off["rmse"]) == (pytest.approx(1.0), pytest.approx(1.0))
    assert off["r2"] == pytest.approx(1 - 4 / 5)
    with pytest.raises(ValueError, match="equal-length"):
        regression_scores(truth[:2], truth)


def test_evaluate_regression_reports_real_units(trained_diabetes: Any) -> None:
    from sklearn.metrics import mean_absolute_error, r2_score

    from shared.ml.evaluate import evaluate_regression, predict_logits

    splits, model = trained_diabetes.splits, trained_diabetes.model
    target = splits.target_normalization
    report = evaluate_regression(model, splits.x_test, splits.y_test, target)
    predicted = target.invert(predict_logits(model, splits.x_test)[:, 0].numpy())
    truth = splits.y_test.astype(np.float64)
    assert report["num_samples"] == len(truth) == 67
    assert report["r2"] == pytest.approx(r2_score(truth, predicted), abs=1e-6)
    assert report["mae"] == pytest.approx(mean_absolute_error(truth, predicted), rel=1e-5)
    # In the target's units (diabetes spans 25..346), not the standardized ones.
    assert 20 < report["mae"] < 80 and report["rmse"] >= report["mae"]
    # The loss is the standardized target's MSE: RMSE² over the train split's variance.
    assert report["loss"] == pytest.approx(report["rmse"] ** 2 / target.std**2, rel=1e-4)


def test_r2_gap() -> None:
    from shared.ml.evaluate import r2_gap

    assert r2_gap(0.6, 0.5) == pytest.approx(0.1)
    assert r2_gap(0.2, -0.3) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at most 1"):
        r2_gap(1.2, 0.5)
