import math
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from shared.ml.architecture import Architecture, build_model, design_architecture
from shared.ml.checkpoint import TrainingCheckpoint, load_checkpoint, save_checkpoint
from shared.ml.convergence import ConvergenceMonitor
from shared.ml.data import DatasetSplits, load_splits
from shared.ml.evaluate import loss_and_accuracy
from shared.ml.training import EpochMetrics, TrainConfig, Trainer, train_classifier

# Dropout makes the runs below depend on the RNG stream as well as on the weights.
SMALL_CONFIG = TrainConfig(epochs=6, batch_size=32, seed=3, early_stopping=False)


def _digits_arch(digits: DatasetSplits, dropout: float = 0.2) -> Architecture:
    return design_architecture(digits.num_features, digits.num_classes, dropout=dropout)


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _losses(history: list[EpochMetrics]) -> list[tuple[float, float]]:
    return [(m.train_loss, m.val_loss) for m in history]


def test_digits_reaches_90_percent_test_accuracy(trained_digits: Any) -> None:
    splits, result = trained_digits.splits, trained_digits.result
    _, test_accuracy = loss_and_accuracy(trained_digits.model, splits.x_test, splits.y_test)
    print(f"digits: test accuracy {test_accuracy:.4f} in {trained_digits.seconds:.2f}s")
    assert test_accuracy >= 0.90
    assert 1 <= len(result.history) <= trained_digits.config.epochs
    assert result.history[0].train_loss > result.final.train_loss
    assert 1 <= result.best_epoch <= len(result.history)
    assert result.convergence_reason


def test_training_is_bit_identical_for_a_seed(digits: DatasetSplits) -> None:
    arch = _digits_arch(digits)
    first, first_result = train_classifier(digits, arch, SMALL_CONFIG)
    torch.rand(1000)  # whatever the process did in between must not matter
    second, second_result = train_classifier(digits, arch, SMALL_CONFIG)
    _assert_same_weights(first, second)
    assert _losses(first_result.history) == _losses(second_result.history)
    other, _ = train_classifier(digits, arch, SMALL_CONFIG.model_copy(update={"seed": 4}))
    assert not torch.equal(first.state_dict()["0.weight"], other.state_dict()["0.weight"])


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adamw"])
def test_resumed_run_ends_with_the_same_weights(
    digits: DatasetSplits, tmp_path: Any, optimizer: str
) -> None:
    config = SMALL_CONFIG.model_copy(update={"optimizer": optimizer, "checkpoint_every": 2})
    arch = _digits_arch(digits)
    saved: list[int] = []

    def save(checkpoint: TrainingCheckpoint) -> None:
        save_checkpoint(tmp_path / f"epoch-{checkpoint.epoch}", checkpoint)
        saved.append(checkpoint.epoch)

    uninterrupted, full = train_classifier(digits, arch, config, on_checkpoint=save)
    assert saved == [2, 4, 6]

    torch.rand(1000)
    resumed, rest = train_classifier(
        digits, arch, config, resume_from=load_checkpoint(tmp_path / "epoch-4")
    )
    _assert_same_weights(uninterrupted, resumed)
    assert _losses(rest.history) == _losses(full.history)


def test_resume_refuses_changed_settings(digits: DatasetSplits) -> None:
    arch = _digits_arch(digits)
    checkpoints: list[TrainingCheckpoint] = []
    config = SMALL_CONFIG.model_copy(update={"epochs": 2, "checkpoint_every": 2})
    train_classifier(digits, arch, config, on_checkpoint=checkpoints.append)
    changed = config.model_copy(update={"batch_size": config.batch_size * 2})
    with pytest.raises(ValueError, match="batch_size"):
        train_classifier(digits, arch, changed, resume_from=checkpoints[0])
    # A smaller step and clipping (a retry of a diverged run) continue the same run.
    slower = config.model_copy(update={"learning_rate": 0.0001, "grad_clip_norm": 1.0})
    train_classifier(digits, arch, slower, resume_from=checkpoints[0])
    # More epochs is a legitimate way to continue a run.
    _, result = train_classifier(
        digits, arch, config.model_copy(update={"epochs": 3}), resume_from=checkpoints[0]
    )
    assert [m.epoch for m in result.history] == [1, 2, 3]


def test_callbacks_see_every_epoch_and_cannot_change_training(digits: DatasetSplits) -> None:
    arch = _digits_arch(digits)
    seen: list[int] = []

    def noisy_callback(metrics: EpochMetrics) -> None:
        seen.append(metrics.epoch)
        torch.rand(100)

    plain, _ = train_classifier(digits, arch, SMALL_CONFIG)
    observed, _ = train_classifier(digits, arch, SMALL_CONFIG, on_epoch=noisy_callback)
    assert seen == list(range(1, SMALL_CONFIG.epochs + 1))
    _assert_same_weights(plain, observed)


def test_early_stopping_ends_a_converged_run() -> None:
    iris = load_splits("iris")
    arch = design_architecture(iris.num_features, iris.num_classes)
    config = TrainConfig(epochs=300, batch_size=16, learning_rate=0.01, patience=3)
    _, result = train_classifier(iris, arch, config)
    assert result.converged
    assert result.stopped_early
    assert result.converged_epoch == len(result.history) < 300
    assert "for 3 epochs" in result.convergence_reason


def test_trainer_uses_the_epoch_sampler(digits: DatasetSplits) -> None:
    arch = _digits_arch(digits, dropout=0.0)
    calls: list[int] = []

    def first_hundred_rows(epoch: int) -> list[int]:
        calls.append(epoch)
        return list(range(100))

    torch.manual_seed(0)
    model = build_model(arch)
    config = SMALL_CONFIG.model_copy(update={"epochs": 2})
    Trainer(model, arch, digits, config, epoch_sampler=first_hundred_rows).fit()
    assert calls == [1, 2]


@pytest.mark.parametrize(
    "change",
    [{"epochs": 0}, {"epochs": 1001}, {"optimizer": "lbfgs"}, {"batch_size": 0}, {"lr_gamma": 1.0}],
)
def test_train_config_rejects_bad_values(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TrainConfig.model_validate(change)


def test_monitor_reports_val_loss_plateau_and_divergence() -> None:
    monitor = ConvergenceMonitor(patience=2, threshold=0.01)
    for epoch, val_loss in enumerate([1.0, 0.5, 0.495, 0.499], start=1):
        monitor.update(epoch, train_loss=0.1, train_accuracy=epoch / 10, val_loss=val_loss)
    assert monitor.converged_epoch == 4
    assert monitor.best_epoch == 2
    assert monitor.converged_reason is not None
    assert "validation loss" in monitor.converged_reason

    diverging = ConvergenceMonitor(patience=2, threshold=0.01)
    diverging.update(1, train_loss=math.nan, train_accuracy=0.1, val_loss=math.nan)
    assert diverging.diverged
    assert not diverging.converged


def test_the_model_kept_is_the_best_validation_epoch(digits: DatasetSplits, tmp_path: Any) -> None:
    # A high rate with no early stop overfits: the best validation epoch comes before the last.
    config = TrainConfig(
        epochs=25,
        batch_size=16,
        learning_rate=0.02,
        seed=3,
        early_stopping=False,
        checkpoint_every=25,
    )
    arch = _digits_arch(digits, dropout=0.0)
    checkpoints: list[TrainingCheckpoint] = []
    model, result = train_classifier(digits, arch, config, on_checkpoint=checkpoints.append)
    assert result.best_epoch < result.final.epoch
    assert result.best.epoch == result.best_epoch
    val_loss, _ = loss_and_accuracy(model, digits.x_val, digits.y_val)
    assert val_loss == pytest.approx(result.best.val_loss, rel=1e-6)
    assert val_loss < result.final.val_loss

    # The checkpoint carries the best weights, so a resumed run still keeps them.
    save_checkpoint(tmp_path / "last", checkpoints[-1])
    restored = load_checkpoint(tmp_path / "last")
    assert restored.best_model_state is not None
    for name, tensor in model.state_dict().items():
        assert torch.equal(restored.best_model_state[name], tensor), name


def test_a_regression_network_learns_diabetes_on_standardized_targets(
    trained_diabetes: Any,
) -> None:
    from shared.ml.evaluate import evaluate_regression

    splits, result = trained_diabetes.splits, trained_diabetes.result
    first, best = result.history[0], result.best
    # MSE of the standardized target: an untrained network starts near the target's variance
    # (1), not near diabetes's ~6,000 squared units.
    assert 0.5 < first.train_loss < 3.0
    assert best.val_loss < first.val_loss
    assert best.train_accuracy is None and best.val_accuracy is None
    assert best.val_r2 is not None and best.val_r2 > 0.3
    assert best.val_mae is not None and best.val_rmse is not None and best.val_rmse > best.val_mae
    test = evaluate_regression(
        trained_diabetes.model, splits.x_test, splits.y_test, splits.target_normalization
    )
    assert test["r2"] > 0.3, test
    if result.converged:
        assert "R²" in result.convergence_reason or "validation loss" in result.convergence_reason


def test_regression_training_is_bit_identical_for_a_seed() -> None:
    splits = load_splits("diabetes")
    arch = design_architecture(splits.num_features, splits.num_classes, hidden_layers=[16])
    config = TrainConfig(epochs=3, batch_size=32, seed=5)
    first = train_classifier(splits, arch, config)[1]
    second = train_classifier(splits, arch, config)[1]
    assert [m.val_loss for m in first.history] == [m.val_loss for m in second.history]
    assert [m.val_r2 for m in first.history] == [m.val_r2 for m in second.history]


def test_a_network_must_be_of_its_datas_task(digits: DatasetSplits) -> None:
    regression = design_architecture(digits.num_features, None)
    with pytest.raises(ValueError, match="a regression network for classification data"):
        Trainer(build_model(regression), regression, digits, TrainConfig(epochs=1))


def test_a_regression_run_converges_when_its_train_r2_plateaus() -> None:
    monitor = ConvergenceMonitor(patience=2, threshold=0.0, score="R²")
    for epoch, (val_loss, r2) in enumerate([(1.0, 0.5), (0.9, 0.5), (0.8, 0.5)], start=1):
        monitor.update(epoch, 0.5, r2, val_loss)
    assert monitor.converged and "train R² plateaued at 0.5000" in str(monitor.converged_reason)
