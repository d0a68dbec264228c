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
