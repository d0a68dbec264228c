"""Event contracts: every message that advances a workflow, as a pydantic model.

A class's `subject` is where it is published. Subjects under `nexus.` are captured by the
JetStream stream `NEXUS`; consumers are durable and idempotent on `event_id`.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="ignore")
    subject: ClassVar[str]

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    workflow_id: uuid.UUID
    tenant_id: str
    occurred_at: datetime = Field(default_factory=_now)
    schema_version: int = SCHEMA_VERSION


# --- phase 1: setup -------------------------------------------------------------------------
class WorkflowRequested(Event):
    """Published by any system to start a workflow. The token is the caller's bearer JWT or
    API key; tenant_id is taken from the token, not trusted from the payload."""

    subject: ClassVar[str] = "nexus.workflow.requested"
    tenant_id: str = ""
    spec: dict[str, Any]
    auth_token: str


class Phase1Completed(Event):
    subject: ClassVar[str] = "nexus.phase1.completed"
    cluster_id: uuid.UUID
    spec: dict[str, Any]


# --- phase 2: configure ---------------------------------------------------------------------
class NodeInfo(BaseModel):
    node_id: str
    role: Literal["worker", "parameter_server", "validator"]
    rank: int
    pid: int
    host: str


class NodeRegistered(Event):
    """A node process is up and serves tasks on `nodes.{node_id}.task`. For a standalone
    cluster (one not started for a workflow) workflow_id carries the cluster's id."""

    subject: ClassVar[str] = "nexus.node.registered"
    cluster_id: uuid.UUID
    node: NodeInfo


class ClusterNodesReady(Event):
    """The cluster's node processes all registered and the topology is connected."""

    subject: ClassVar[str] = "nexus.cluster.nodes_ready"
    cluster_id: uuid.UUID
    nodes: list[NodeInfo]
    spec: dict[str, Any]


class Phase2Completed(Event):
    subject: ClassVar[str] = "nexus.phase2.completed"
    cluster_id: uuid.UUID
    nodes: list[NodeInfo]
    architecture: dict[str, Any]
    spec: dict[str, Any]


# --- phase 3: train -------------------------------------------------------------------------
class TrainingProgress(Event):
    subject: ClassVar[str] = "nexus.training.progress"
    job_id: uuid.UUID
    epoch: int
    epochs: int
    # None when the run diverged: JSON has no NaN, so a NaN loss travels as null.
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    seconds: float


class TrainingFinished(Event):
    """A worker node reports the end of a training task (success or failure)."""

    subject: ClassVar[str] = "nexus.training.finished"
    job_id: uuid.UUID
    node_id: str
    succeeded: bool
    error: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)


class Phase3Completed(Event):
    subject: ClassVar[str] = "nexus.phase3.completed"
    job_id: uuid.UUID
    model_uri: str
    metrics: dict[str, Any]
    spec: dict[str, Any]
    cluster_id: uuid.UUID
    # The cluster's nodes as phase 2 reported them; the validator dispatches to the validator
    # node from this list and asks the cluster service only when it is empty.
    nodes: list[NodeInfo] = Field(default_factory=list)


# --- phase 4: validate ----------------------------------------------------------------------
class ValidationFinished(Event):
    """The validator node reports measured results for a validation task."""

    subject: ClassVar[str] = "nexus.validation.finished"
    validation_id: uuid.UUID
    node_id: str
    succeeded: bool
    error: str | None = None
    result: dict[str, Any] = Field(default_factory=dict)


class Phase4Passed(Event):
    subject: ClassVar[str] = "nexus.phase4.passed"
    validation_id: uuid.UUID
    model_uri: str
    metrics: dict[str, Any]
    spec: dict[str, Any]


# --- phase 5: deploy ------------------------------------------------------------------------
class Phase5Completed(Event):
    subject: ClassVar[str] = "nexus.phase5.completed"
    deployment_id: uuid.UUID
    model_id: uuid.UUID
    served_url: str


# --- failures of any phase ------------------------------------------------------------------
class PhaseFailed(Event):
    """Published on `nexus.phase{phase}.failed` (see `published_subject`)."""

    subject: ClassVar[str] = "nexus.phase.failed"
    phase: int = Field(ge=1, le=5)
    reason: str
    details: dict[str, Any] = Field(default_factory=dict)

    def published_subject(self) -> str:
        return f"nexus.phase{self.phase}.failed"


PHASE_NAMES = {1: "setup", 2: "configure", 3: "train", 4: "validate", 5: "deploy"}


def subject_of(event: Event) -> str:
    if isinstance(event, PhaseFailed):
        return event.published_subject()
    return event.subject
