"""What every node task reports when it ends: one `TaskFinished` event per task."""

from __future__ import annotations

from pydantic import model_validator

from shared.contracts.base import Event


class TaskFinished(Event):
    """A node reports the end of a task; `result` (typed by each subclass) holds what it
    measured, and on failure `error` says why (with whatever partial result there is)."""

    node_id: str
    succeeded: bool
    error: str | None = None

    @model_validator(mode="after")
    def _failure_has_a_reason(self) -> TaskFinished:
        if not self.succeeded and not self.error:
            self.error = "the node reported a failure without a reason"
        return self
