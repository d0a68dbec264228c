"""Phase 3's contracts: the `train` task the trainer sends a worker node, the per-epoch
progress the node streams, and the typed result it ends with."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.base import Event
from shared.contracts.nodes import Rendezvous
from shared.contracts.tasks import TaskFinished
from shared.project_layout import CHECKPOINTS_DIR, MODELS_DIR
from shared.spec import WorkflowSpec

if TYPE_CHECKING:
    from shared.artifacts import ArtifactStore


class EpochReport(BaseModel):
    """One epoch as the worker measured it. A diverged run's NaN travels as None (JSON has no
    NaN). A classifier reports accuracies; a regression model None for them and its R², MAE
    and RMSE (in the target's units) instead; its losses are the standardized target's MSE."""

    epoch: int
    epochs: int
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    train_r2: float | None = None
    val_r2: float | None = None
    val_mae: float | None = None
    val_rmse: float | None = None
    learning_rate: float | None = None
    grad_norm: float | None = None
    samples_per_second: float | None = None  # of all the job's workers together
    samples: int | None = None
    # Every process of the job over the epoch, in rank order: node_id, role, rank, samples,
    # samples_per_second, cpu_percent, rss_mb.
    nodes: list[dict[str, Any]] | None = None


class TrainingProgress(EpochReport, Event):
    subject: ClassVar[str] = "nexus.training.progress"
    job_id: uuid.UUID
    attempt: int = Field(default=0, ge=0)  # the job's run that reports (see TrainTask)


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
    setup_seconds: float | None = None  # from the task's start to the first training step
    # The epoch whose weights were saved: the best validation epoch.
    kept: EpochReport | None = None
    # What each process of the job did over the whole run (see `node_totals`).
    nodes: list[dict[str, Any]] = Field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """The saved model's epoch's figures plus the run's summary (the job row,
        Phase3Completed)."""
        epoch = self.kept or self.final
        figures = epoch.model_dump(exclude={"seconds", "nodes"}) if epoch else {}
        return {
            **figures,
            "last_epoch": self.final.epoch if self.final else None,
            "converged": self.converged,
            "convergence_reason": self.convergence_reason,
            "converged_epoch": self.converged_epoch,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "epochs_run": self.epochs_run if self.epochs_run is not None else len(self.history),
            "training_seconds": self.seconds,
            "setup_seconds": self.setup_seconds,
            "nodes": self.nodes,
        }

    def history_dicts(self) -> list[dict[str, Any]]:
        return [epoch.model_dump() for epoch in self.history]


class TrainingFinished(TaskFinished):
    """A worker node reports the end of a training task (success or failure)."""

    subject: ClassVar[str] = "nexus.training.finished"
    job_id: uuid.UUID
    attempt: int = Field(default=0, ge=0)
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


class JobPlacement(BaseModel):
    """One process's place in a multi-process job: ranks 0..servers-1 are the parameter
    servers, then the workers; `members` are the nodes by rank."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(ge=0)
    members: list[str] = Field(min_length=1, max_length=64)
    servers: int = Field(default=0, ge=0)
    # This process's place among the job's workers on its own host: its GPU under NCCL.
    local_rank: int = Field(default=0, ge=0)
    rendezvous: Rendezvous
    # Bounds the rendezvous and every collective: a lost peer fails the job this fast.
    timeout_s: float = Field(default=60.0, gt=0, le=3600)

    @property
    def world_size(self) -> int:
        return len(self.members)

    @model_validator(mode="after")
    def _rank_in_world(self) -> JobPlacement:
        if self.rank >= self.world_size or self.servers >= self.world_size:
            raise ValueError(f"rank {self.rank}, {self.servers} servers, {self.world_size} ranks")
        return self


def node_totals(history: list[EpochReport]) -> list[dict[str, Any]]:
    """Per process over the run: rows trained, mean samples/s and CPU, peak resident memory."""
    rows: dict[int, list[dict[str, Any]]] = {}
    for epoch in history:
        for node in epoch.nodes or []:
            rows.setdefault(node["rank"], []).append(node)
    totals: list[dict[str, Any]] = []
    for rank, epochs in sorted(rows.items()):
        names: dict[str, Any] = {k: epochs[0][k] for k in ("node_id", "role") if k in epochs[0]}
        totals.append(
            {
                **names,
                "rank": rank,
                "samples": sum(e["samples"] for e in epochs),
                "samples_per_second": round(
                    sum(e["samples_per_second"] for e in epochs) / len(epochs), 1
                ),
                "cpu_percent": round(sum(e["cpu_percent"] for e in epochs) / len(epochs), 1),
                "peak_rss_mb": max(e["rss_mb"] for e in epochs),
            }
        )
    return totals


class TrainTask(BaseModel):
    """The payload of a `train` task, one per process of the job. Torch-free: the web
    process builds it, the node reads it. `placement` is None for strategy `single`."""

    model_config = ConfigDict(extra="forbid")

    job_id: uuid.UUID
    workflow_id: uuid.UUID
    tenant_id: str
    cluster_id: uuid.UUID
    spec: WorkflowSpec
    architecture: dict[str, Any]
    artifacts: TrainArtifacts
    placement: JobPlacement | None = None
    # 0 for the job's first run; each recovery after a lost node runs the job again, on the
    # nodes left, as the next attempt, resumed from `resume_from` or a newer in-memory
    # snapshot of a surviving rank.
    attempt: int = Field(default=0, ge=0, le=100)
    resume_from: str | None = Field(default=None, max_length=2000)  # a checkpoint's URL

    @model_validator(mode="after")
    def _placed_when_distributed(self) -> TrainTask:
        strategy = self.spec.training.strategy
        if (strategy == "single") != (self.placement is None):
            needs = "needs its placement" if strategy != "single" else "runs without placement"
            raise ValueError(f"a {strategy} task {needs} (rank, members, rendezvous)")
        servers = self.placement.servers if self.placement else 0
        if (strategy == "parameter_server") != (servers > 0):
            raise ValueError(f"a {strategy} task has {servers} parameter servers")
        return self
