"""The runtime a served model's forward pass runs in: ONNX Runtime only where the export
answers as torch does, whichever is faster on this machine, and the same classes either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from shared.ml import runtimes
from shared.ml.predictor import Predictor
from shared.ml.runtimes import ONNX_TOLERANCE, fastest_runtime, onnx_forward, torch_forward


@pytest.fixture(scope="module")
def predictor(saved_digits_model: Path) -> Predictor:
    return Predictor.from_path(saved_digits_model)


def test_onnx_answers_as_torch_does_for_any_number_of_rows(predictor: Predictor) -> None:
    model, width = predictor.loaded.model, predictor.num_features
    onnx, torch_ = onnx_forward(model, width), torch_forward(model)
    for count in (1, 7, 300):
        x = predictor.normalized(load_digits().data[:count])
        np.testing.assert_allclose(onnx(x), torch_(x), atol=ONNX_TOLERANCE, rtol=0)


def test_the_faster_runtime_serves_and_predicts_the_same_classes(predictor: Predictor) -> None:
    choice = fastest_runtime(predictor.loaded.model, predictor.num_features)
    assert set(choice.single_row_us) == {"torch", "onnxruntime"}
    assert choice.name == min(choice.single_row_us, key=choice.single_row_us.__getitem__)
    assert choice.onnx_difference is not None and choice.onnx_difference <= ONNX_TOLERANCE
    rows = load_digits().data[:270]
    before = predictor.predict(rows)
    served = Predictor(predictor.loaded)
    served.use(choice)
    after = served.predict(rows)
    assert served.runtime == choice.name
    assert after.classes == before.classes
    np.testing.assert_allclose(after.probabilities, before.probabilities, atol=1e-5)


def test_an_export_that_answers_differently_is_not_used(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def wrong(model: object, width: int) -> runtimes.Forward:
        return lambda x: np.zeros((len(x), 10), dtype=np.float32)

    monkeypatch.setattr(runtimes, "onnx_forward", wrong)
    choice = fastest_runtime(predictor.loaded.model, predictor.num_features)
    assert choice.name == "torch" and set(choice.single_row_us) == {"torch"}
    assert choice.onnx_difference is not None and choice.onnx_difference > ONNX_TOLERANCE


def test_a_model_that_does_not_export_is_served_by_torch(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(model: object, width: int) -> runtimes.Forward:
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(runtimes, "onnx_forward", fails)
    choice = fastest_runtime(predictor.loaded.model, predictor.num_features)
    assert choice.name == "torch" and choice.onnx_difference is None
