"""Fixtures of the trainer tests: a real in-process task context, and one training run on
digits that several tests read (training is the slow part, so it runs once)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.trainer.node_task import run_training
from shared.artifacts import ArtifactStore
from shared.contracts import (
    Event,
    NodeInfo,
    TrainArtifacts,
    TrainingFinished,
    TrainingProgress,
    TrainTask,
)
from shared.spec import WorkflowSpec

REPO_ROOT = Path(__file__).resolve().parents[3]


def digits_spec(**training: Any) -> WorkflowSpec:
    settings = {
        "strategy": "single",
        "epochs": 3,
        "learning_rate": 0.01,
        "checkpoint_every": 2,
        "patience": 10,
    }
    return WorkflowSpec.model_validate(
        {"name": "digits-test", "dataset": "digits", "training": {**settings, **training}}
    )


def node(role: str = "worker", rank: int = 0, name: str | None = None) -> NodeInfo:
    node_id = name or f"test-{uuid.uuid4().hex[:8]}-{role}-{rank}"
    return NodeInfo(node_id=node_id, role=role, rank=rank, pid=1, host="127.0.0.1")  # type: ignore[arg-type]


@dataclass
class CollectingContext:
    """A TaskContext that keeps what the task publishes; `after_publish` lets a test act
    between epochs (e.g. cancel), as a node's cancel message would."""

    artifacts_url: str
    node: NodeInfo = field(default_factory=node)
    cluster_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None
    published: list[Event] = field(default_factory=list)
    after_publish: Callable[[CollectingContext, Event], None] | None = None

    def publish(self, event: Event) -> None:
        # Round-trip through JSON as the bus does, so what a consumer would parse is checked.
        self.published.append(type(event).model_validate_json(event.model_dump_json()))
        if self.after_publish is not None:
            self.after_publish(self, event)

    publish_soon = publish

    @property
    def progress(self) -> list[TrainingProgress]:
        return [e for e in self.published if isinstance(e, TrainingProgress)]

    @property
    def finished(self) -> TrainingFinished:
        (finished,) = [e for e in self.published if isinstance(e, TrainingFinished)]
        return finished


def train_payload(
    store: ArtifactStore,
    spec: WorkflowSpec,
    tenant_id: str = "t-test",
    placement: dict[str, Any] | None = None,
) -> dict:
    from shared.ml.architecture import design_architecture
    from shared.ml.data import describe_dataset

    shape = describe_dataset(spec.dataset)
    workflow_id = uuid.uuid4()
    architecture = design_architecture(shape["features"], shape["classes"])
    payload = TrainTask(
        job_id=uuid.uuid4(),
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        cluster_id=uuid.uuid4(),
        spec=spec,
        architecture=architecture.to_dict(),
        artifacts=TrainArtifacts.for_workflow(store, tenant_id, workflow_id),
        placement=placement,
    )
    return payload.model_dump(mode="json")


@pytest.fixture
def one_thread() -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)  # the task sets one thread, process-wide


@dataclass(frozen=True)
class TrainedRun:
    store: ArtifactStore
    payload: dict[str, Any]
    context: CollectingContext


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """Three epochs on digits, a checkpoint every two (so epochs 2 and, as the last, 3)."""
    import torch

    previous = torch.get_num_threads()
    store = ArtifactStore(f"file://{tmp_path_factory.mktemp('artifacts')}")
    payload = train_payload(store, digits_spec())
    context = CollectingContext(artifacts_url=store.root_url)
    run_training(payload, context)
    torch.set_num_threads(previous)
    return TrainedRun(store, payload, context)
