"""JSON shapes of the cluster service's API. `WorkflowOut` is what the CLI's --follow polls."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, computed_field


class PhaseOut(BaseModel):
    phase: int
    name: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    detail: dict[str, Any] | None

    @computed_field(description="seconds from the phase's start to its end (None until both)")
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds(), 3)


class ProgressOut(BaseModel):
    epoch: int | None = None
    epochs: int | None = None
    train_loss: float | None = None
    val_accuracy: float | None = None  # classification
    val_r2: float | None = None  # regression
    samples_per_second: float | None = None  # of all the job's workers together
    workers: int | None = None  # worker processes training the job


class ResultOut(BaseModel):
    served_url: str | None = None
    model_id: str | None = None
    report_uri: str | None = None
    test_accuracy: float | None = None  # classification
    test_r2: float | None = None  # regression, with test_rmse in the target's units
    test_rmse: float | None = None


class WorkflowOut(BaseModel):
    id: uuid.UUID
    name: str
    status: str
    current_phase: int
    phases: list[PhaseOut]
    progress: ProgressOut | None
    error: str | None
    result: ResultOut | None
    # While `queued` for room on the host: 1 is next to start.
    queue_position: int | None = None
    created_at: datetime
    updated_at: datetime


class NodeOut(BaseModel):
    id: str
    role: str
    rank: int
    pid: int | None
    host: str | None
    status: str
    registered_at: datetime | None
    last_heartbeat_at: datetime | None
    heartbeat_age_s: float | None


class ClusterOut(BaseModel):
    id: uuid.UUID
    workflow_id: uuid.UUID | None
    status: str
    layout: dict[str, int]
    error: str | None
    topology: dict[str, Any] | None
    nodes: list[NodeOut]
    queue_position: int | None = None  # while `queued`: 1 is next to start
    created_at: datetime
    updated_at: datetime
