"""The payload of a `train` task: what the trainer service sends and a worker node reads.

Kept free of torch so the web process can build it and the node can validate it.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from shared.artifacts import ArtifactStore
from shared.spec import WorkflowSpec

CHECKPOINTS_DIR = "neural/checkpoints"
MODELS_DIR = "neural/models"
PROGRESS_SUBJECT = "nexus.training.progress"


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


class TrainTaskPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job_id: uuid.UUID
    workflow_id: uuid.UUID
    tenant_id: str
    cluster_id: uuid.UUID
    spec: WorkflowSpec
    architecture: dict[str, Any]
    artifacts: TrainArtifacts


def checkpoint_url(checkpoints_url: str, epoch: int) -> str:
    return f"{checkpoints_url.rstrip('/')}/epoch-{epoch:04d}"
