"""The workflow spec refuses what the platform cannot honour, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from shared.ml.data import BUNDLED_DATASETS as ML_DATASETS
from shared.spec import BUNDLED_DATASETS, WorkflowSpec

ROOT = Path(__file__).resolve().parents[2]


def spec(**changes: Any) -> dict[str, Any]:
    return {"name": "digits-mlp", "dataset": "digits"} | changes


def test_defaults_make_a_valid_four_node_spec() -> None:
    parsed = WorkflowSpec.model_validate(spec())
    assert parsed.cluster.node_count == 4
    assert parsed.training.strategy == "ddp"


def test_the_spec_knows_the_same_datasets_as_the_ml_package() -> None:
    assert set(BUNDLED_DATASETS) == set(ML_DATASETS)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "mnist"}, "unknown dataset 'mnist'"),
        ({"deploy": {"batching": {"max_batch_size": 0}}}, "greater than or equal to 1"),
        ({"deploy": {"batching": {"max_wait_us": 10**6}}}, "less than or equal to 100000"),
        ({"deploy": {"batching": {"size": 8}}}, "Extra inputs are not permitted"),
        ({"training": {"strategy": "horovod"}}, "Input should be 'ddp', 'parameter_server'"),
        ({"training": {"ps_mode": "async"}}, "ps_mode 'async' applies to strategy parameter_s"),
        ({"training": {"max_staleness": 2}}, "max_staleness applies to ps_mode 'async' only"),
        (
            {"training": {"strategy": "parameter_server", "ps_mode": "sync", "max_staleness": 1}},
            "max_staleness applies to ps_mode 'async' only",
        ),
        ({"training": {"max_staleness": -1}}, "greater than or equal to 0"),
        ({"training": {"deadline_s": 0}}, "Input should be greater than 0"),
        ({"training": {"min_workers": 3}}, r"training.min_workers \(3\) exceeds cluster.workers"),
        ({"training": {"max_restarts": 21}}, "less than or equal to 20"),
        (
            {
                "training": {"strategy": "parameter_server"},
                "cluster": {"parameter_servers": 0, "workers": 3},
            },
            "strategy parameter_server needs cluster.parameter_servers >= 1",
        ),
        ({"cluster": {"workers": 0}}, "greater than or equal to 1"),
        ({"gates": {"min_accuracy": 0.5}}, "may not be below the platform's 0.85"),
        ({"gates": {"max_p99_latency_ms": 500}}, "may not exceed the platform's 100 ms"),
        ({"gates": {"max_train_val_gap": 0.2}}, "may not exceed the platform's 0.05"),
        ({"cluster": {"workers": 1}}, "cluster has 3 nodes; the gates require 4"),
        ({"model": {"hidden_layers": []}}, "between 1 and 8 hidden layers"),
        ({"model": {"hidden_layers": [5000]}}, "between 1 and 4096"),
        ({"name": "has spaces"}, "String should match pattern"),
        ({"surprise": 1}, "Extra inputs are not permitted"),
        ({"training": {"epochs": 5, "warmup_epochs": 5}}, r"must be fewer than epochs \(5\)"),
        ({"training": {"lr_schedule": "exponential"}}, "Input should be 'constant'"),
        ({"training": {"grad_clip_norm": 0}}, "greater than 0"),
        # A regression dataset's gates: R² may be tightened, never loosened below the floor,
        # and a classifier's gates mean nothing for it (nor its gates for a classifier).
        ({"dataset": "diabetes", "gates": {"min_r2": 0.1}}, "may not be below the platform's 0.3"),
        ({"dataset": "diabetes", "gates": {"min_r2": 1.5}}, "less than or equal to 1"),
        ({"dataset": "diabetes", "gates": {"max_rmse": 0}}, "greater than 0"),
        (
            {"dataset": "diabetes", "gates": {"max_train_val_r2_gap": 0.5}},
            "may not exceed the platform's 0.2",
        ),
        (
            {"dataset": "diabetes", "gates": {"min_accuracy": 0.9}},
            "gates.min_accuracy does not apply to 'diabetes', a regression dataset",
        ),
        (
            {"dataset": "diabetes", "gates": {"max_train_val_gap": 0.01}},
            "gates.max_train_val_gap does not apply to 'diabetes', a regression dataset",
        ),
        (
            {"gates": {"min_r2": 0.5}},
            "gates.min_r2 does not apply to 'digits', a classification dataset",
        ),
        (
            {"dataset": "synthetic_classification", "gates": {"max_rmse": 10}},
            "gates.max_rmse does not apply",
        ),
    ],
)
def test_bad_specs_are_refused_with_a_reason(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WorkflowSpec.model_validate(spec(**changes))


@pytest.mark.parametrize(
    "training",
    [
        {"strategy": "single"},
        {"strategy": "ddp"},
        {"strategy": "parameter_server"},
        {"strategy": "parameter_server", "ps_mode": "async", "max_staleness": 2},
    ],
)
def test_every_strategy_is_accepted(training: dict[str, Any]) -> None:
    assert WorkflowSpec.model_validate(spec(training=training)).training.strategy


def test_ddp_may_run_without_a_parameter_server() -> None:
    parsed = WorkflowSpec.model_validate(spec(cluster={"workers": 3, "parameter_servers": 0}))
    assert parsed.cluster.node_count == 4


def test_a_spec_may_tighten_the_gates() -> None:
    tightened = WorkflowSpec.model_validate(spec(gates={"min_accuracy": 0.95}))
    assert tightened.gates.min_accuracy == 0.95


def test_a_regression_spec_may_tighten_its_own_gates_and_round_trips() -> None:
    tightened = WorkflowSpec.model_validate(
        spec(dataset="diabetes", gates={"min_r2": 0.4, "max_rmse": 70.0})
    )
    assert (tightened.gates.min_r2, tightened.gates.max_rmse) == (0.4, 70.0)
    # Stored and read back with every gate dumped at its value, it validates again.
    assert WorkflowSpec.model_validate(tightened.model_dump(mode="json")) == tightened


@pytest.mark.parametrize(
    "model",
    [
        {"type": "mlp"},
        {"type": "auto"},
        {"type": "layers", "layers": [{"type": "dense", "units": 16, "activation": "relu"}]},
    ],
)
def test_every_model_type_is_accepted_for_regression(model: dict[str, Any]) -> None:
    parsed = WorkflowSpec.model_validate(spec(dataset="diabetes", model=model))
    assert parsed.model.type == model["type"]


def test_a_layer_spec_for_regression_is_checked_against_one_output() -> None:
    from shared.spec import dataset_shape

    assert dataset_shape("diabetes").outputs == 1
    # A 1-D conv over diabetes's 10 features laid out as [1, 10] is fine; [2, 5] is not 10.
    layers = [{"type": "conv1d", "filters": 4}, {"type": "flatten"}]
    WorkflowSpec.model_validate(
        spec(dataset="diabetes", model={"type": "layers", "layers": layers, "input_shape": [1, 10]})
    )
    with pytest.raises(ValidationError, match="model"):
        WorkflowSpec.model_validate(
            spec(
                dataset="diabetes",
                model={"type": "layers", "layers": layers, "input_shape": [3, 5]},
            )
        )


@pytest.mark.parametrize(
    "example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_example_spec_is_valid(example: Path) -> None:
    WorkflowSpec.model_validate(yaml.safe_load(example.read_text()))
