"""A layer spec is checked for shape before anything trains, with the layer and the mismatch
named; the module built from it gives the shapes and parameter count the check computed."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from shared.layer_spec import Layer, LayerShapeError, infer_shapes, input_shape_for
from shared.ml.architecture import Architecture, build_model
from shared.ml.checkpoint import count_parameters
from shared.spec import BUNDLED_SHAPES, WorkflowSpec

LAYERS = TypeAdapter(list[Layer])

EVERY_KIND = [
    {"type": "conv2d", "filters": 8, "kernel_size": 3, "activation": "silu"},
    {"type": "batchnorm"},
    {"type": "maxpool2d", "kernel_size": 2},
    {
        "type": "residual",
        "layers": [
            {"type": "conv2d", "filters": 8, "kernel_size": 3, "activation": "gelu"},
            {"type": "layernorm"},
        ],
    },
    {"type": "avgpool2d", "kernel_size": 2, "stride": 1},
    {"type": "conv2d", "filters": 4, "kernel_size": 2, "padding": "valid"},
    {"type": "flatten"},
    {"type": "dense", "units": 32, "activation": "leaky_relu"},
    {"type": "batchnorm"},
    {"type": "dropout", "rate": 0.2},
    {"type": "activation", "name": "tanh"},
    {"type": "dense", "units": 16, "activation": "sigmoid"},
]
SEQUENCE = [
    {"type": "conv1d", "filters": 6, "kernel_size": 5, "activation": "relu"},
    {"type": "maxpool1d", "kernel_size": 2},
    {"type": "avgpool1d", "kernel_size": 2},
    {"type": "batchnorm"},
    {"type": "global_avgpool"},
]


@pytest.mark.parametrize(
    ("layers", "input_shape"),
    [(EVERY_KIND, [1, 8, 8]), (SEQUENCE, [2, 32]), ([{"type": "dense", "units": 8}], None)],
    ids=["image", "sequence", "rows"],
)
def test_the_built_network_has_the_checked_shapes_and_parameter_count(
    layers: list[dict[str, Any]], input_shape: list[int] | None
) -> None:
    features = 64
    architecture = Architecture(
        input_dim=features,
        num_classes=10,
        layers=LAYERS.validate_python(layers),
        input_shape=input_shape,
    )
    model = build_model(architecture)
    model.eval()
    assert model(torch.randn(5, features)).shape == (5, 10)
    assert architecture.parameter_count == count_parameters(model)
    # What the record keeps is what it builds again.
    again = Architecture.model_validate(architecture.to_dict())
    assert again == architecture


@pytest.mark.parametrize(
    ("layers", "input_shape", "message"),
    [
        (
            [{"type": "dense", "units": 8}, {"type": "conv2d", "filters": 4}],
            None,
            "layers[1] conv2d expects 4-D input (N, C, H, W), got (N, 8)",
        ),
        (
            [{"type": "conv2d", "filters": 4}, {"type": "dense", "units": 8}],
            [1, 8, 8],
            "layers[1] dense expects 2-D input (N, features), got (N, 4, 8, 8)",
        ),
        (
            [{"type": "conv1d", "filters": 4}],
            [1, 8, 8],
            "layers[0] conv1d expects 3-D input (N, C, L), got (N, 1, 8, 8)",
        ),
        (
            [
                {"type": "residual", "layers": [{"type": "conv2d", "filters": 4}]},
                {"type": "flatten"},
            ],
            [1, 8, 8],
            "layers[0] residual: its layers turn (N, 1, 8, 8) into (N, 4, 8, 8)",
        ),
        (
            [
                {
                    "type": "residual",
                    "layers": [{"type": "dense", "units": 4}, {"type": "conv2d", "filters": 1}],
                }
            ],
            None,
            "layers[0].layers[1] conv2d expects 4-D input",
        ),
        (
            [{"type": "maxpool2d", "kernel_size": 16}, {"type": "flatten"}],
            [1, 8, 8],
            "layers[0] maxpool2d kernel 16 is larger than its input (N, 1, 8, 8)",
        ),
        (
            [{"type": "conv2d", "filters": 4, "stride": 2}],
            [1, 8, 8],
            "layers[0] conv2d: padding 'same' needs stride 1",
        ),
        ([{"type": "conv2d", "filters": 4}], [1, 8, 8], "the layers end with (N, 4, 8, 8)"),
        ([{"type": "dense", "units": 4096}] * 4, None, "parameters; at most 50,000,000"),
        ([{"type": "flatten"}], [2, 8, 8], "model.input_shape [2, 8, 8] holds 128 values"),
    ],
)
def test_a_layer_that_does_not_fit_is_named_with_the_mismatch(
    layers: list[dict[str, Any]], input_shape: list[int] | None, message: str
) -> None:
    with pytest.raises(LayerShapeError) as raised:
        infer_shapes(LAYERS.validate_python(layers), input_shape_for(64, input_shape), 10)
    assert message in str(raised.value)
    # And a workflow spec with it is refused at submission, with the same words.
    model = {"type": "layers", "layers": layers, "input_shape": input_shape}
    with pytest.raises(ValidationError) as refused:
        WorkflowSpec.model_validate({"name": "x", "dataset": "digits", "model": model})
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"type": "layers"}, "model.layers is required with type layers"),
        ({"layers": [{"type": "flatten"}]}, "model.layers is required with type layers"),
        ({"type": "auto", "hidden_layers": [8]}, "hidden_layers belongs to type mlp"),
        ({"input_shape": [1, 8, 8]}, "input_shape belongs to type layers or auto"),
        (
            {"type": "layers", "layers": [{"type": "dense", "units": 0}]},
            "greater than or equal to 1",
        ),
        ({"type": "layers", "layers": [{"type": "dropout", "rate": 0.95}]}, "less than 0.9"),
    ],
)
def test_a_model_section_that_mixes_kinds_of_network_is_refused(
    model: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        WorkflowSpec.model_validate({"name": "x", "dataset": "digits", "model": model})
    assert message in str(refused.value)


def test_the_bundled_shapes_the_spec_checks_against_are_the_datasets_own() -> None:
    from shared.ml.data import describe_dataset

    for name, shape in BUNDLED_SHAPES.items():
        described = describe_dataset(name)
        assert (
            described["samples"],
            described["features"],
            described["classes"],
            described["task"],
        ) == shape[:4]
        assert shape.input_shape is None and shape.categorical == ()
