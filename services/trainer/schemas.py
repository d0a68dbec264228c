import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

# recovering: a node was lost and the job is starting again on the nodes left.
JobStatus = Literal["queued", "running", "recovering", "succeeded", "failed", "cancelled"]


class JobOut(BaseModel):
    id: uuid.UUID
    workflow_id: uuid.UUID
    cluster_id: uuid.UUID
    node_id: str | None
    status: JobStatus
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    model_uri: str | None
    checkpoints: list[str]
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # Each node lost while training and how the job went on: the node and why, what
    # replaced it, the attempt, the epochs done again and the time until the next epoch.
    recoveries: list[dict[str, Any]] = Field(default_factory=list)


class JobListOut(BaseModel):
    jobs: list[JobOut]


class EpochOut(BaseModel):
    epoch: int
    metrics: dict[str, Any] = Field(
        description="train/val loss and accuracy and seconds, as measured on the worker"
    )
    at: datetime


class JobMetricsOut(BaseModel):
    job_id: uuid.UUID
    status: JobStatus
    epochs: list[EpochOut]


class CancelOut(BaseModel):
    job: JobOut
    node_notified: bool = Field(description="whether the worker node acknowledged the cancel")
    detail: str


class DatasetOut(BaseModel):
    name: str
    task: str = "classification"  # or "regression": classes is then 0
    samples: int
    features: int
    classes: int
    class_names: list[str]
