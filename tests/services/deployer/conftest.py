"""Fixtures for the deployer tests: a small trained digits model, a real memory service on a
port, and one deployer app (with its process manager) shared by the session."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.deployer.app import create_app
from services.deployer.models import RegisteredModel
from services.deployer.repository import DeployerRepository
from services.deployer.rollout import Deployer
from services.deployer.settings import DeployerSettings
from shared.service_app import ServiceContext
from shared.spec import WorkflowSpec
from tests.infrastructure import model_ports
from tests.support import as_service, running

SEED = 42  # the spec's default seed: the smoke test draws its rows from this split
# Served models of the tests stay clear of 8100+, where a local stack serves its own, and
# of the other test workers' (tests/infrastructure.py).
TEST_PORTS = model_ports()[:200]


@pytest.fixture(scope="session")
def digits_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits MLP trained for a few epochs (~95% test accuracy), saved with safetensors."""
    import torch

    from shared.ml.architecture import design_architecture
    from shared.ml.checkpoint import save_model
    from shared.ml.data import load_splits
    from shared.ml.training import TrainConfig, train_classifier

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        splits = load_splits("digits", seed=SEED)
        architecture = design_architecture(splits.num_features, splits.num_classes, [32])
        config = TrainConfig(epochs=8, learning_rate=3e-3, seed=SEED, early_stopping=False)
        model, result = train_classifier(splits, architecture, config)
    finally:
        torch.set_num_threads(previous_threads)
    destination = tmp_path_factory.mktemp("digits-model")
    save_model(
        destination,
        model,
        architecture,
        splits.normalization,
        class_names=splits.class_names,
        metrics=result.final.to_dict(),
        extra_metadata={"dataset": "digits"},
    )
    return destination


@pytest.fixture(scope="session")
def diabetes_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A regression MLP trained on diabetes, saved with its target normalization."""
    import torch

    from shared.ml.architecture import design_architecture
    from shared.ml.checkpoint import save_model
    from shared.ml.data import load_splits
    from shared.ml.training import TrainConfig, train_classifier

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        splits = load_splits("diabetes", seed=SEED)
        architecture = design_architecture(splits.num_features, splits.num_classes)
        config = TrainConfig(epochs=60, batch_size=16, seed=SEED)
        model, result = train_classifier(splits, architecture, config)
    finally:
        torch.set_num_threads(previous_threads)
    destination = tmp_path_factory.mktemp("diabetes-model")
    save_model(
        destination,
        model,
        architecture,
        splits.normalization,
        class_names=[],
        target_normalization=splits.target_normalization,
        metrics=result.final.to_dict(),
        extra_metadata={"dataset": "diabetes"},
    )
    return destination


@pytest.fixture(scope="session")
def corrupt_model_dir(digits_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same model with its weights overwritten: the checksum check refuses to load it."""
    destination = tmp_path_factory.mktemp("corrupt-model")
    shutil.copytree(digits_model_dir, destination, dirs_exist_ok=True)
    (destination / "model.safetensors").write_bytes(b"not safetensors at all")
    return destination


@dataclass
class DeployerHarness:
    client: httpx.AsyncClient  # in-process client of the deployer app
    app: FastAPI
    memory_url: str
    internal_token: str

    @property
    def context(self) -> ServiceContext:
        context: ServiceContext = self.app.state.context
        return context

    @property
    def deployer(self) -> Deployer:
        return self.context.state.deployer

    def headers(self, tenant_id: str) -> dict[str, str]:
        return as_service(self.internal_token, tenant_id)

    async def register(
        self,
        tenant_id: str,
        model_dir: Path,
        name: str,
        *,
        port: int | None = None,
        **spec_fields: Any,
    ) -> RegisteredModel:
        """A digits model in the registry; `spec_fields` go into its spec (gates, deploy)."""
        deploy = {"port": port, **spec_fields.pop("deploy", {})}
        spec = WorkflowSpec.model_validate(
            {
                "name": name,
                "dataset": "digits",
                "training": {"seed": SEED},
                "deploy": deploy,
                **spec_fields,
            }
        )
        async with self.context.unit_of_work() as uow:
            return await DeployerRepository(uow.session, tenant_id).register_model(
                uuid.uuid4(),
                name,
                model_dir.as_uri(),
                {"test_accuracy": 0.95},
                spec.model_dump(mode="json"),
            )


def deployer_settings(memory_url: str, **overrides: object) -> DeployerSettings:
    values: dict[str, object] = {
        "memory_url": memory_url,
        "restore_on_startup": False,  # restore() is tested on one tenant, explicitly
        "model_port_start": TEST_PORTS.start,
        "model_port_end": TEST_PORTS.stop - 1,
        "model_ready_timeout_s": 60.0,
        **overrides,
    }
    return DeployerSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def harness(
    service_env: dict[str, str], internal_token: str, memory_url: str
) -> AsyncIterator[DeployerHarness]:
    app = create_app(deployer_settings(memory_url))
    async with running(app) as client:
        yield DeployerHarness(client, app, memory_url, internal_token)


@pytest.fixture
async def stop_tenant_deployments(harness: DeployerHarness, tenant_id: str) -> AsyncIterator[None]:
    """Stop what a test left running, so no record stays `running` for a later restore."""
    yield
    async with harness.context.unit_of_work() as uow:
        running_ = await DeployerRepository(uow.session, tenant_id).list_deployments(
            "running", None, 1000
        )
    for deployment in running_:
        await harness.deployer.stop(tenant_id, deployment.id)
