"""Fields every event carries, and where an event is published."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

PHASE_NAMES = {1: "setup", 2: "configure", 3: "train", 4: "validate", 5: "deploy"}


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """A fact one service publishes on the NEXUS stream; its class's `subject` is where."""

    model_config = ConfigDict(extra="ignore")
    subject: ClassVar[str]

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    workflow_id: uuid.UUID
    tenant_id: str
    occurred_at: datetime = Field(default_factory=_now)
    schema_version: int = SCHEMA_VERSION

    def published_subject(self) -> str:
        return self.subject


def subject_of(event: Event) -> str:
    return event.published_subject()
