import json
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from shared.ml.architecture import (
    Architecture,
    build_model,
    count_parameters,
    design_architecture,
)

VALID: dict[str, Any] = {"input_dim": 4, "num_classes": 3, "hidden_layers": [8]}


@pytest.mark.parametrize(
    "change",
    [
        {"input_dim": 0},
        {"num_classes": 1},
        {"hidden_layers": [0]},
        {"hidden_layers": [4097]},
        {"hidden_layers": [8] * 9},
        {"activation": "swish"},
        {"dropout": 0.9},
        {"dropout": -0.1},
        {"layers": 3},
    ],
)
def test_architecture_rejects_bad_values(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Architecture.model_validate(VALID | change)


def test_default_design_is_a_power_of_two_funnel() -> None:
    assert design_architecture(64, 10).hidden_layers == [128, 64]
    assert design_architecture(4, 3).hidden_layers == [32, 32]
    assert design_architecture(1000, 2).hidden_layers == [256, 128]
    # Many classes widen the funnel past 256 so the last hidden layer is no bottleneck.
    assert design_architecture(20, 500).hidden_layers == [512, 512]


def test_explicit_design_is_kept() -> None:
    arch = design_architecture(5, 2, hidden_layers=[7, 3], activation="tanh", dropout=0.25)
    assert arch.hidden_layers == [7, 3]
    assert arch.activation == "tanh"


def test_build_model_outputs_logits_per_class() -> None:
    arch = Architecture(input_dim=6, num_classes=4, hidden_layers=[16, 8], dropout=0.1)
    model = build_model(arch)
    assert model(torch.zeros(5, 6)).shape == (5, 4)
    assert sum(isinstance(m, nn.Dropout) for m in model) == 2
    assert count_parameters(model) == (6 * 16 + 16) + (16 * 8 + 8) + (8 * 4 + 4)


def test_architecture_without_hidden_layers_is_linear() -> None:
    model = build_model(Architecture(input_dim=3, num_classes=2))
    assert count_parameters(model) == 3 * 2 + 2


def test_architecture_round_trips_through_json() -> None:
    arch = design_architecture(30, 2, activation="gelu", dropout=0.2)
    assert Architecture.model_validate(json.loads(json.dumps(arch.to_dict()))) == arch


def test_parameter_count_matches_the_built_model() -> None:
    from shared.ml.architecture import build_model, count_parameters, design_architecture

    for layers in ([128, 64], [32], [7, 5, 3]):
        arch = design_architecture(64, 10, hidden_layers=layers, dropout=0.1)
        assert arch.parameter_count == count_parameters(build_model(arch))


def test_a_regression_architecture_has_one_output_and_no_classes() -> None:
    arch = design_architecture(10, 0)
    assert (arch.task, arch.num_classes, arch.num_outputs) == ("regression", None, 1)
    assert arch.hidden_layers == [32, 32]
    model = build_model(arch)
    assert model(torch.zeros(5, 10)).shape == (5, 1)
    assert arch.parameter_count == count_parameters(model)
    assert arch.describe() == "MLP 10 -> 32 -> 32 -> 1 (relu, dropout 0.0)"
    assert Architecture.model_validate(json.loads(json.dumps(arch.to_dict()))) == arch
    with pytest.raises(ValidationError, match="num_classes is required for classification"):
        Architecture(input_dim=10, task="regression", num_classes=3)
    with pytest.raises(ValidationError, match="num_classes is required for classification"):
        Architecture(input_dim=10)
