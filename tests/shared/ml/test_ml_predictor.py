from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from shared.ml.evaluate import predict_logits
from shared.ml.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(saved_digits_model: Path) -> Predictor:
    return Predictor.from_path(saved_digits_model)


def test_predictor_normalizes_raw_rows_like_training(
    predictor: Predictor, trained_digits: Any
) -> None:
    raw = load_digits()
    result = predictor.predict(raw.data[:200].tolist())
    normalized = trained_digits.splits.normalization.apply(raw.data[:200])
    expected = predict_logits(trained_digits.model, normalized).argmax(dim=1).tolist()
    assert result.classes == expected
    assert result.class_names == [str(c) for c in expected]
    assert np.mean(np.asarray(result.classes) == raw.target[:200]) > 0.9
    np.testing.assert_allclose(np.asarray(result.probabilities).sum(axis=1), 1, atol=1e-5)


def test_predictor_accepts_numpy_rows(predictor: Predictor) -> None:
    rows = load_digits().data[:5]
    assert predictor.predict(rows).classes == predictor.predict(rows.tolist()).classes


def _rows(n: int = 4) -> list[list[float]]:
    rows: list[list[float]] = load_digits().data[:n].tolist()
    return rows


def test_wrong_width_names_the_row(predictor: Predictor) -> None:
    rows = _rows()
    rows[3] = rows[3][:12]
    with pytest.raises(ValueError, match="row 3 has 12 features; the model expects 64"):
        predictor.predict(rows)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_values_name_the_row_and_feature(predictor: Predictor, bad: float) -> None:
    rows = _rows()
    rows[1][5] = bad
    with pytest.raises(ValueError, match=r"row 1 has a non-finite value \(.*\) at feature 5"):
        predictor.predict(rows)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "no rows"),
        ([["a"] * 64], "row 0 contains a value that is not a number"),
        ([[[1.0]] * 64], "row 0 must be a flat list"),
        ([[1e300] * 64], "row 0 has a value too large for float32 at feature 0"),
        (np.zeros(64), "2-D"),
    ],
)
def test_malformed_input_is_rejected(predictor: Predictor, rows: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        predictor.predict(rows)


@pytest.fixture(scope="module")
def regressor(saved_diabetes_model: Path) -> Predictor:
    return Predictor.from_path(saved_diabetes_model)


def test_a_regression_predictor_answers_values_in_the_targets_units(
    regressor: Predictor, trained_diabetes: Any
) -> None:
    from shared.ml.scores import regression_scores

    splits = trained_diabetes.splits
    result = regressor.answer(splits.x_test_raw.tolist())
    assert result == regressor.predict_values(splits.x_test_raw)
    assert all(isinstance(v, float) for v in result.values)
    # De-standardized exactly as the network's outputs map back to diabetes's scale.
    outputs = predict_logits(trained_diabetes.model, splits.x_test)[:, 0].numpy()
    expected = splits.target_normalization.invert(outputs)
    np.testing.assert_allclose(result.values, expected, rtol=1e-5)
    assert 25 < float(np.mean(result.values)) < 346
    assert regression_scores(np.asarray(result.values), splits.y_test)["r2"] > 0.3


def test_a_regression_predictor_refuses_bad_rows_and_class_questions(
    regressor: Predictor,
) -> None:
    assert regressor.task == "regression" and regressor.class_names == []
    with pytest.raises(ValueError, match="row 0 has 3 features; the model expects 10"):
        regressor.predict_values([[1.0, 2.0, 3.0]])
    with pytest.raises(TypeError, match="predict_values"):
        regressor.predict([[0.0] * 10])
