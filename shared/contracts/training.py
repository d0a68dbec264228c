"""Phase 3's contracts: the `train` task the trainer sends a worker node, the per-epoch
progress the node streams, and the typed result it ends with."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.base import Event
from shared.contracts.tasks import TaskFinished
from shared.project_layout import CHECKPOINTS_DIR, MODELS_DIR
from shared.spec import WorkflowSpec

if TYPE_CHECKING:
    from shared.artifacts import ArtifactStore


class EpochReport(BaseModel):
    """One epoch as the worker measured it. A diverged run's NaN travels as None (JSON has no
    NaN)."""

    epoch: int
    epochs: int
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    learning_rate: float | None = None
    grad_norm: float | None = None
    samples_per_second: float | None = None


class TrainingProgress(EpochReport, Event):
    subject: ClassVar[str] = "nexus.training.progress"
    job_id: uuid.UUID


class TrainResult(BaseModel):
    """What a `train` task produced. On failure or cancel only what was saved until then:
    the checkpoints, the epochs run and the time."""

    checkpoints: list[str] = Field(default_factory=list)
    history: list[EpochReport] = Field(default_factory=list)
    seconds: float = 0.0
    cancelled: bool = False
    model_uri: str | None = None
    final: EpochReport | None = None
    converged: bool | None = None
    convergence_reason: str | None = None
    converged_epoch: int | None = None
    best_epoch: int | None = None
    best_val_loss: float | None = None
    epochs_run: int | None = None

    def metrics(self) -> dict[str, Any]:
        """The last epoch's figures plus the run's summary (the job row, Phase3Completed)."""
        final = self.final.model_dump(exclude={"seconds"}) if self.final else {}
        return {
            **final,
            "converged": self.converged,
            "convergence_reason": self.convergence_reason,
            "converged_epoch": self.converged_epoch,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "epochs_run": self.epochs_run if self.epochs_run is not None else len(self.history),
            "training_seconds": self.seconds,
        }

    def history_dicts(self) -> list[dict[str, Any]]:
        return [epoch.model_dump() for epoch in self.history]


class TrainingFinished(TaskFinished):
    """A worker node reports the end of a training task (success or failure)."""

    subject: ClassVar[str] = "nexus.training.finished"
    job_id: uuid.UUID
    result: TrainResult = Field(default_factory=TrainResult)


class TrainArtifacts(BaseModel):
    """fsspec URLs the worker writes to (the workflow's folder in the artifact store)."""

    model_config = ConfigDict(extra="forbid")

    workflow: str
    checkpoints: str
    models: str

    @classmethod
    def for_workflow(
        cls, store: ArtifactStore, tenant_id: str, workflow_id: uuid.UUID
    ) -> TrainArtifacts:
        return cls(
            workflow=store.workflow_url(tenant_id, workflow_id),
            checkpoints=store.workflow_url(tenant_id, workflow_id, CHECKPOINTS_DIR),
            models=store.workflow_url(tenant_id, workflow_id, MODELS_DIR),
        )

    def checkpoint(self, epoch: int) -> str:
        return f"{self.checkpoints.rstrip('/')}/epoch-{epoch:04d}"


class TrainTask(BaseModel):
    """The payload of a `train` task. Torch-free: the web process builds it, the node reads it."""

    model_config = ConfigDict(extra="forbid")

    job_id: uuid.UUID
    workflow_id: uuid.UUID
    tenant_id: str
    cluster_id: uuid.UUID
    spec: WorkflowSpec
    architecture: dict[str, Any]
    artifacts: TrainArtifacts
