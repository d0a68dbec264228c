"""The workflow memory keys a phase wrote, as an event: emitted in the phase's transaction,
published after its commit, and stored by the memory service's consumer. So a memory write
is never made while a row lock is held, and is never lost when the memory service is down."""

from __future__ import annotations

from typing import Any, ClassVar

from shared.contracts.base import Event


class MemoryWritten(Event):
    """`keys` (names from shared.project_layout.MemoryKey) go into the namespace of the
    event's workflow, for the event's tenant, in the order given."""

    subject: ClassVar[str] = "nexus.memory.written"
    keys: dict[str, Any]
