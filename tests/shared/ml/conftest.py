"""Shared fixtures: digits splits and one model trained on them, reused across the ml tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from shared.ml.architecture import Architecture, design_architecture
from shared.ml.checkpoint import save_model
from shared.ml.data import DatasetSplits, load_splits
from shared.ml.training import TrainConfig, TrainResult, train_classifier

DIGITS_CONFIG = TrainConfig(epochs=15, batch_size=64, learning_rate=1e-3, seed=7)


@contextmanager
def one_thread() -> Iterator[None]:
    # Training is only bit-identical for a fixed thread count, and torch's thread count is
    # process-wide: set it for these tests and hand the previous value back.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    with one_thread():
        yield


@dataclass(frozen=True)
class TrainedDigits:
    splits: DatasetSplits
    architecture: Architecture
    model: nn.Module
    config: TrainConfig
    result: TrainResult
    seconds: float


@pytest.fixture(scope="session")
def digits() -> DatasetSplits:
    return load_splits("digits")


@pytest.fixture(scope="session")
def trained_digits(digits: DatasetSplits) -> TrainedDigits:
    architecture = design_architecture(digits.num_features, digits.num_classes)
    with one_thread():
        started = time.perf_counter()
        model, result = train_classifier(digits, architecture, DIGITS_CONFIG)
        seconds = time.perf_counter() - started
    return TrainedDigits(digits, architecture, model, DIGITS_CONFIG, result, seconds)


@pytest.fixture(scope="session")
def saved_digits_model(
    trained_digits: TrainedDigits, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    destination = tmp_path_factory.mktemp("digits-model")
    save_model(
        destination,
        trained_digits.model,
        trained_digits.architecture,
        trained_digits.splits.normalization,
        class_names=trained_digits.splits.class_names,
        metrics=trained_digits.result.final.to_dict(),
        extra_metadata={"dataset": "digits"},
    )
    return destination


DIABETES_CONFIG = TrainConfig(epochs=60, batch_size=16, learning_rate=1e-3, seed=7)


@dataclass(frozen=True)
class TrainedDiabetes:
    splits: DatasetSplits
    architecture: Architecture
    model: nn.Module
    result: TrainResult


@pytest.fixture(scope="session")
def trained_diabetes() -> TrainedDiabetes:
    """A regression network on diabetes (442 rows, targets 25..346), trained once."""
    splits = load_splits("diabetes")
    architecture = design_architecture(splits.num_features, splits.num_classes)
    with one_thread():
        model, result = train_classifier(splits, architecture, DIABETES_CONFIG)
    return TrainedDiabetes(splits, architecture, model, result)


@pytest.fixture(scope="session")
def saved_diabetes_model(
    trained_diabetes: TrainedDiabetes, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    destination = tmp_path_factory.mktemp("diabetes-model")
    save_model(
        destination,
        trained_diabetes.model,
        trained_diabetes.architecture,
        trained_diabetes.splits.normalization,
        class_names=[],
        target_normalization=trained_diabetes.splits.target_normalization,
        extra_metadata={"dataset": "diabetes"},
    )
    return destination
