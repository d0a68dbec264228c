"""`model: auto`: the network and the training settings the spec left unset are designed from
the data by stated rules, and the design says why."""

from __future__ import annotations

from services.trainer.service.design import design_network
from shared.ml.architecture import Architecture, build_model
from shared.spec import WorkflowSpec


def test_auto_designs_a_cnn_for_images_and_picks_the_unset_training_settings() -> None:
    spec = WorkflowSpec.model_validate(
        {
            "name": "auto",
            "dataset": "digits",
            "model": {"type": "auto", "input_shape": [1, 8, 8]},
            "training": {"learning_rate": 0.003},
        }
    )
    # 1,797 rows, 70% for training, over two workers: ~629 a worker, a batch of 16.
    assert spec.training.optimizer == "adamw" and spec.training.batch_size == 16
    assert spec.training.learning_rate == 0.003, "a setting the spec gave is kept"
    assert spec.training.epochs == 75  # ~3,000 steps at 40 an epoch
    # The stored spec is parsed again downstream: it keeps what was chosen.
    assert WorkflowSpec.model_validate(spec.model_dump(mode="json")) == spec

    design = design_network(spec)
    architecture = Architecture.model_validate(design.architecture)
    assert [layer.type for layer in architecture.layers or []] == [
        "conv2d",
        "maxpool2d",
        "conv2d",
        "flatten",
        "dense",
        "dropout",
    ]
    assert design.source == "designed" and design.summary().startswith("layers 1x8x8 -> conv2d")
    assert any("small CNN" in line for line in design.rationale)
    assert "training.learning_rate 0.003: set" in design.rationale
    assert any(line.startswith("training.batch_size 16: about 1/50") for line in design.rationale)
    assert design.parameter_count == sum(p.numel() for p in build_model(architecture).parameters())


def test_auto_designs_the_mlp_funnel_for_rows() -> None:
    spec = WorkflowSpec.model_validate({"name": "auto", "dataset": "iris", "model": "auto"})
    design = design_network(spec)
    assert design.architecture["hidden_layers"] == [32, 32] and "layers" not in design.architecture
    assert "an MLP funnel" in design.rationale[0]
    assert spec.training.batch_size == 16 and spec.training.epochs == 100
