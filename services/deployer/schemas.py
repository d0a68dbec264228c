import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DeploymentStatus = Literal["starting", "running", "failed", "stopped", "rolled_back"]


class ModelOut(BaseModel):
    id: uuid.UUID
    workflow_id: uuid.UUID
    name: str
    version: int
    model_uri: str
    metrics: dict[str, Any]
    spec: dict[str, Any]
    created_at: datetime


class DeploymentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: uuid.UUID = Field(description="A registered model (GET /models).")
    port: int | None = Field(
        default=None,
        ge=1024,
        le=65535,
        description="Port to serve on; the first free one from 8100 up when omitted.",
    )


class DeploymentOut(BaseModel):
    id: uuid.UUID
    model_id: uuid.UUID
    workflow_id: uuid.UUID
    status: DeploymentStatus
    port: int | None
    url: str | None
    pid: int | None
    previous_deployment_id: uuid.UUID | None
    error: str | None
    checks: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
