"""Categorical columns in a network: embedding layers come first, one per column the data
declares categorical; the shapes and parameters are checked ahead of training, unseen codes
share a row of their own, and the codes reach the network unscaled."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from shared.auto_design import auto_layers
from shared.layer_spec import Embedding, Layer, LayerShapeError, check_embeddings, infer_shapes
from shared.ml.architecture import Architecture, build_model
from shared.ml.checkpoint import count_parameters
from shared.ml.data import Normalization
from shared.spec import SHAPE_CONTEXT, DatasetShape, WorkflowSpec

LAYERS = TypeAdapter(list[Layer])
EMBEDDED = [
    {"type": "embedding", "column": 2, "categories": 3, "dim": 4},
    {"type": "embedding", "column": 5, "categories": 10, "dim": 2},
    {"type": "dense", "units": 8, "activation": "relu"},
]
# Six features, two of them categorical: column 2 with 3 categories, column 5 with 10.
SHAPE = DatasetShape(rows=500, features=6, classes=2, categorical=((2, 3), (5, 10)))


def test_embedded_columns_widen_the_row_and_count_their_tables() -> None:
    layers = LAYERS.validate_python(EMBEDDED)
    # 4 other columns + 4 + 2 embedded values -> dense 8 -> 2 outputs.
    expected = (3 + 1) * 4 + (10 + 1) * 2 + (10 + 1) * 8 + (8 + 1) * 2
    assert infer_shapes(layers, (6,), 2) == expected
    architecture = Architecture(input_dim=6, num_classes=2, layers=layers)
    model = build_model(architecture)
    assert count_parameters(model) == expected == architecture.parameter_count


def test_a_code_training_never_saw_takes_the_unknown_row_instead_of_failing() -> None:
    layers = LAYERS.validate_python(EMBEDDED)
    model = build_model(Architecture(input_dim=6, num_classes=2, layers=layers))
    model.eval()
    rows = torch.tensor([[0.1, 0.2, 1.0, 0.3, 0.4, 7.0]] * 4)
    rows[1, 2], rows[2, 2], rows[3, 2] = 3.0, -1.0, 1.5  # past the end, negative, not whole
    with torch.no_grad():
        out = model(rows)
    assert out.shape == (4, 2) and torch.isfinite(out).all()
    # The same answer for each; to rounding, since a row's place in the batch may take
    # another kernel path through the matrix product.
    torch.testing.assert_close(out[2], out[1])
    torch.testing.assert_close(out[3], out[2])
    assert not torch.equal(out[0], out[1])


@pytest.mark.parametrize(
    ("layers", "input_shape", "message"),
    [
        ([{"type": "dense", "units": 4}, EMBEDDED[0]], (6,), "layers[1] embedding: embedding"),
        (
            [{"type": "residual", "layers": [EMBEDDED[0]]}],
            (6,),
            "layers[0].layers[0] embedding: embedding layers come first",
        ),
        ([{**EMBEDDED[0], "column": 6}, {"type": "flatten"}], (6,), "column 6 is not in a row"),
        ([EMBEDDED[0], EMBEDDED[0]], (6,), "layers[1] embedding: column 2 is embedded twice"),
        ([EMBEDDED[0], {"type": "flatten"}], (1, 2, 3), "expects the flat input row"),
    ],
)
def test_a_misplaced_embedding_is_named(
    layers: list[dict[str, Any]], input_shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(LayerShapeError, match=re.escape(message)):
        infer_shapes(LAYERS.validate_python(layers), input_shape, 2)


def test_only_the_datas_categorical_columns_are_embedded_all_of_them() -> None:
    layers = LAYERS.validate_python(EMBEDDED)
    check_embeddings(layers, {2: 3, 5: 10})
    with pytest.raises(LayerShapeError, match="column 5 has 12 categories; the layer has room"):
        check_embeddings(layers, {2: 3, 5: 12})
    with pytest.raises(LayerShapeError, match="layers\\[0\\] embedding: column 2 is not a cat"):
        check_embeddings(layers, {5: 10})
    with pytest.raises(LayerShapeError, match="column 7 is categorical \\(4 categories\\)"):
        check_embeddings(layers, {2: 3, 5: 10, 7: 4})


def spec(model: Any, dataset: str = "00000000-0000-4000-8000-000000000001") -> WorkflowSpec:
    body = {"name": "categorical", "dataset": dataset, "model": model}
    return WorkflowSpec.model_validate(body, context={SHAPE_CONTEXT: SHAPE})


def test_a_spec_on_categorical_data_must_embed_it() -> None:
    assert spec({"type": "layers", "layers": EMBEDDED}).model.layers is not None
    assert spec("auto").model.type == "auto"
    with pytest.raises(ValidationError, match="an MLP of hidden_layers cannot embed"):
        spec({"type": "mlp"})
    with pytest.raises(ValidationError, match="column 2 is categorical"):
        spec({"type": "layers", "layers": [{"type": "dense", "units": 8}]})
    # The built-in datasets have no categorical columns at all.
    with pytest.raises(ValidationError, match="its categorical columns: none"):
        WorkflowSpec.model_validate(
            {"name": "x", "dataset": "iris", "model": {"type": "layers", "layers": EMBEDDED[::2]}}
        )


def test_auto_embeds_each_categorical_column_and_says_how() -> None:
    layers, reasons = auto_layers((6,), [(2, 3), (5, 10)])
    assert layers is not None
    embeddings = [layer for layer in layers if isinstance(layer, Embedding)]
    assert [(e.column, e.categories, e.dim) for e in embeddings] == [(2, 3, 3), (5, 10, 6)]
    assert "fast.ai" in reasons[0]
    infer_shapes(layers, (6,), 2)


def test_codes_reach_the_network_unscaled() -> None:
    x = np.array([[1.0, 0.0, 5.0], [3.0, 2.0, 7.0], [5.0, 1.0, 9.0]])
    normalization = Normalization.fit(x, keep=[1])
    assert normalization.mean.tolist() == [3.0, 0.0, 7.0]
    assert normalization.apply(x)[:, 1].tolist() == [0.0, 2.0, 1.0]
