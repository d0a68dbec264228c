"""Learning-rate schedules, gradient clipping and the per-epoch training figures."""

from __future__ import annotations

import math

import pytest

from shared.ml.architecture import build_model, design_architecture
from shared.ml.data import DatasetSplits
from shared.ml.schedule import LearningRateSchedule
from shared.ml.training import TrainConfig, Trainer


def _rates(config: TrainConfig) -> list[float]:
    schedule = LearningRateSchedule(config)
    return [schedule.rate(epoch) for epoch in range(1, config.epochs + 1)]


def test_warm_up_then_step_decay() -> None:
    config = TrainConfig(
        epochs=6, learning_rate=0.1, warmup_epochs=2, lr_schedule="step", lr_step_epochs=2
    )
    assert _rates(config) == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_decays_from_the_full_rate_towards_zero() -> None:
    rates = _rates(TrainConfig(epochs=4, learning_rate=0.1, lr_schedule="cosine"))
    assert rates[0] == pytest.approx(0.1)
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(
        0.05 * (1 + math.cos(math.pi * 3 / 4))
    )


def test_plateau_cuts_the_rate_after_patience_epochs_without_progress() -> None:
    config = TrainConfig(learning_rate=0.1, lr_schedule="plateau", lr_patience=2, lr_gamma=0.5)
    schedule = LearningRateSchedule(config)
    for val_loss in (1.0, 0.9, 0.95, 0.96):  # two epochs without a new best
        schedule.observe(val_loss)
    assert schedule.rate(5) == pytest.approx(0.05)
    resumed = LearningRateSchedule(config)
    resumed.load_state_dict(schedule.state_dict())
    assert resumed.rate(5) == schedule.rate(5)


def test_epochs_report_their_rate_gradient_norm_and_throughput(digits: DatasetSplits) -> None:
    arch = design_architecture(digits.num_features, digits.num_classes, hidden_layers=[16])
    config = TrainConfig(
        epochs=3,
        batch_size=64,
        learning_rate=0.01,
        lr_schedule="step",
        lr_step_epochs=1,
        lr_gamma=0.5,
        early_stopping=False,
    )
    result = Trainer(build_model(arch), arch, digits, config).fit()
    assert [m.learning_rate for m in result.history] == pytest.approx([0.01, 0.005, 0.0025])
    assert all(m.grad_norm and m.grad_norm > 0 for m in result.history)
    assert all(m.samples_per_second and m.samples_per_second > 0 for m in result.history)


def test_clipping_bounds_the_step(digits: DatasetSplits) -> None:
    arch = design_architecture(digits.num_features, digits.num_classes, hidden_layers=[16])
    base = TrainConfig(
        epochs=1,
        batch_size=64,
        learning_rate=0.5,
        optimizer="sgd",
        momentum=0.0,
        early_stopping=False,
        seed=1,
    )

    def weights_after(config: TrainConfig) -> list[float]:
        import torch

        torch.manual_seed(1)
        model = build_model(arch)
        Trainer(model, arch, digits, config).fit()
        return [float(p.detach().abs().sum()) for p in model.parameters()]

    unclipped = weights_after(base)
    clipped = weights_after(base.model_copy(update={"grad_clip_norm": 1e-3}))
    assert clipped != pytest.approx(unclipped)
