import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.validator.models import VALIDATION_STATUSES


class ValidationCreate(BaseModel):
    """Re-validate a workflow's trained model (phase 4 must have run for it once)."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: uuid.UUID
    model_uri: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="A model folder inside the workflow's artifacts; defaults to phase 4's.",
    )


class ValidationOut(BaseModel):
    id: uuid.UUID
    workflow_id: uuid.UUID
    trigger: str
    status: str = Field(description=" | ".join(VALIDATION_STATUSES))
    model_uri: str
    node_id: str | None
    gates: dict[str, Any]
    results: dict[str, Any]
    report_uri: str | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class ValidationListOut(BaseModel):
    validations: list[ValidationOut]
