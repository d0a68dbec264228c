"""What the bus itself reports: an event a consumer gave up on."""

from __future__ import annotations

import uuid
from typing import ClassVar, Literal

from pydantic import Field

from shared.contracts.base import Event

DeadLetterKind = Literal["malformed", "handler_failed"]


class EventDeadLettered(Event):
    """Published on `nexus.deadletter.{consumer}` when a consumer gives up on a message: it
    could not be parsed or validated (`malformed`: no retry can fix it, and whatever workflow
    it claims is not trusted, so none is named), or its handler failed on every one of its
    deliveries (`handler_failed`: the workflow it names is failed with the reason). The
    message itself is terminated, so nothing behind it waits."""

    subject: ClassVar[str] = "nexus.deadletter"
    # Known only when the message parsed; a malformed one names no workflow or tenant.
    workflow_id: uuid.UUID | None = None  # type: ignore[assignment]
    tenant_id: str = ""
    consumer: str
    original_subject: str
    kind: DeadLetterKind
    reason: str = Field(max_length=2000)
    deliveries: int = Field(ge=1)
    payload: str = Field(description="the start of the message body as received")

    def published_subject(self) -> str:
        return f"{self.subject}.{self.consumer}"
