"""The runtime a served model's forward pass runs in: TorchScript or ONNX Runtime only where
the export answers as torch does, whichever is fastest on this machine, and the same classes
either way; int8 weights in ONNX Runtime when asked for, measured beside the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits

from shared.ml import runtimes
from shared.ml.predictor import Predictor
from shared.ml.runtimes import (
    EXPORT_TOLERANCE,
    fastest_runtime,
    int8_runtime,
    onnx_forward,
    torch_forward,
    torchscript_forward,
)


@pytest.fixture(scope="module")
def predictor(saved_digits_model: Path) -> Predictor:
    return Predictor.from_path(saved_digits_model)


@pytest.mark.parametrize("export", [onnx_forward, torchscript_forward])
def test_an_export_answers_as_torch_does_for_any_number_of_rows(
    predictor: Predictor, export: Any
) -> None:
    model, width = predictor.loaded.model, predictor.num_features
    exported, torch_ = export(model, width), torch_forward(model)
    for count in (1, 7, 300):
        x = predictor.normalized(load_digits().data[:count])
        np.testing.assert_allclose(exported(x), torch_(x), atol=EXPORT_TOLERANCE, rtol=0)


def test_the_faster_runtime_serves_and_predicts_the_same_classes(predictor: Predictor) -> None:
    choice = fastest_runtime(predictor.loaded.model, predictor.num_features)
    assert set(choice.single_row_us) == {"torch", "torchscript", "onnxruntime"}
    assert choice.name == min(choice.single_row_us, key=choice.single_row_us.__getitem__)
    assert set(choice.differences) == {"torchscript", "onnxruntime"}
    assert max(choice.differences.values()) <= EXPORT_TOLERANCE
    assert choice.precision == "float32"
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

    monkeypatch.setitem(runtimes.EXPORTS, "onnxruntime", wrong)
    choice = fastest_runtime(predictor.loaded.model, predictor.num_features)
    assert choice.name != "onnxruntime" and "onnxruntime" not in choice.single_row_us
    assert choice.differences["onnxruntime"] > EXPORT_TOLERANCE


def test_a_model_that_does_not_export_is_served_by_torch(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(model: object, width: int) -> runtimes.Forward:
        raise RuntimeError("unsupported operator")

    monkeypatch.setitem(runtimes.EXPORTS, "onnxruntime", fails)
    monkeypatch.setitem(runtimes.EXPORTS, "torchscript", fails)
    choice = fastest_runtime(predictor.loaded.model, predictor.num_features)
    assert choice.name == "torch" and choice.differences == {}
    assert set(choice.single_row_us) == {"torch"}


def test_int8_weights_serve_nearly_the_same_classes_and_are_measured(
    predictor: Predictor,
) -> None:
    choice = int8_runtime(predictor.loaded.model, predictor.num_features)
    assert choice.name == "onnxruntime-int8" and choice.precision == "int8"
    assert {"torch", "onnxruntime-int8"} <= set(choice.single_row_us)
    assert 0 < choice.differences["onnxruntime-int8"] < 1.0  # quantized: close, not equal
    rows = load_digits().data[:270]
    served = Predictor(predictor.loaded)
    served.use(choice)
    agreement = np.mean(np.equal(served.predict(rows).classes, predictor.predict(rows).classes))
    assert agreement >= 0.97
