"""Fixtures of the validator tests: one tiny digits model trained with shared.ml, its
measured validation, and the validator and memory services running in-process."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from services.validator.app import create_app
from services.validator.settings import ValidatorSettings
from shared.artifacts import ArtifactStore
from shared.contracts import ValidationFinished
from shared.ml.architecture import design_architecture
from shared.ml.checkpoint import save_model
from shared.ml.data import load_splits
from shared.ml.training import TrainConfig, train_classifier
from tests.services.validator.support import (
    CLUSTER_DIRECTORY,
    RecordingContext,
    cluster_directory_app,
)
from tests.support import running, serving

# The spec's default seed: validation rebuilds the split with the seed training used.
SEED = 42
DIGITS_SPEC: dict[str, Any] = {"name": "digits-test", "dataset": "digits"}


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    # A validator node runs one thread; the tests measure the same way.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MLP trained on digits for a few epochs and saved as safetensors."""
    splits = load_splits("digits", seed=SEED)
    # Measured with this seed: test accuracy 0.967, train/validation gap 0.043 (gate 0.05).
    architecture = design_architecture(splits.num_features, splits.num_classes, [128, 64])
    config = TrainConfig(
        epochs=8, batch_size=32, learning_rate=1e-3, seed=SEED, early_stopping=False
    )
    model, result = train_classifier(splits, architecture, config)
    destination = tmp_path_factory.mktemp("digits") / "models"
    save_model(
        destination,
        model,
        architecture,
        splits.normalization,
        class_names=splits.class_names,
        metrics=result.final.to_dict(),
        extra_metadata={"dataset": "digits", "seed": SEED},
    )
    return destination


@pytest.fixture(scope="session")
def diabetes_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small regression MLP trained on diabetes and saved with its target normalization."""
    splits = load_splits("diabetes", seed=SEED)
    architecture = design_architecture(splits.num_features, splits.num_classes)
    config = TrainConfig(epochs=60, batch_size=16, learning_rate=1e-3, seed=SEED)
    model, result = train_classifier(splits, architecture, config)
    destination = tmp_path_factory.mktemp("diabetes") / "models"
    save_model(
        destination,
        model,
        architecture,
        splits.normalization,
        class_names=[],
        target_normalization=splits.target_normalization,
        metrics=result.final.to_dict(),
        extra_metadata={"dataset": "diabetes", "seed": SEED},
    )
    return destination


def validation_payload(model_uri: str, **overrides: Any) -> dict[str, Any]:
    payload = {
        "validation_id": str(uuid.uuid4()),
        "workflow_id": str(uuid.uuid4()),
        "tenant_id": "t-node",
        "model_uri": model_uri,
        "dataset": "digits",
        "seed": SEED,
        "shards": 4,
        "latency_repeats": 200,
    }
    return {**payload, **overrides}


@dataclass(frozen=True)
class MeasuredValidation:
    payload: dict[str, Any]
    event: ValidationFinished


@pytest.fixture(scope="session")
def measured(digits_model: Path) -> MeasuredValidation:
    """run_validation on the digits model, once for every test that reads its figures."""
    from services.validator.node_task import run_validation

    context = RecordingContext()
    payload = validation_payload(f"file://{digits_model}")
    run_validation(payload, context)
    (event,) = context.published
    assert isinstance(event, ValidationFinished)
    return MeasuredValidation(payload, event)


@pytest.fixture(scope="session")
def measured_regression(diabetes_model: Path) -> MeasuredValidation:
    """run_validation on the diabetes regression model."""
    from services.validator.node_task import run_validation

    context = RecordingContext()
    payload = validation_payload(f"file://{diabetes_model}", dataset="diabetes")
    run_validation(payload, context)
    (event,) = context.published
    assert isinstance(event, ValidationFinished)
    return MeasuredValidation(payload, event)


def install_model(
    store: ArtifactStore, tenant_id: str, workflow_id: uuid.UUID, model_dir: Path
) -> str:
    """Copy the trained model to where phase 3 leaves a workflow's model; its URL."""
    url = store.workflow_url(tenant_id, workflow_id, "neural/models")
    shutil.copytree(model_dir, store.path(tenant_id, str(workflow_id), "neural/models"))
    return url


@pytest.fixture(scope="session")
def clusters() -> dict[str, list[dict[str, Any]]]:
    """cluster id -> its nodes, as the cluster directory reports them (tests add to it)."""
    return CLUSTER_DIRECTORY


@pytest.fixture(scope="session")
async def cluster_url(clusters: dict[str, list[dict[str, Any]]]) -> AsyncIterator[str]:
    async with serving(cluster_directory_app(clusters)) as url:
        yield url


@pytest.fixture(scope="session")
def validator_settings(
    service_env: dict[str, str], memory_url: str, cluster_url: str
) -> ValidatorSettings:
    return ValidatorSettings(  # type: ignore[call-arg]
        memory_url=memory_url, cluster_url=cluster_url, latency_repeats=100
    )


@pytest.fixture(scope="session")
async def validator(
    validator_settings: ValidatorSettings,
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The validator service with its consumers, and its context for direct checks."""
    app = create_app(validator_settings)
    async with running(app) as client:
        yield client, app.state.context


@pytest.fixture
def artifacts(validator_settings: ValidatorSettings) -> ArtifactStore:
    return ArtifactStore(validator_settings.artifacts)
