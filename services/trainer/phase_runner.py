"""Runs one step of a phase for one event, exactly once, turning failures into PhaseFailed.

A handler that raised would nak its message and JetStream would redeliver it forever, so a
step's failure is reported instead: the step's transaction is rolled back and a second one
records the event as handled and emits `PhaseFailed`. Only when that also fails (the
database is down) does the handler raise, and the redelivery is then what we want.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from shared.db import UnitOfWork
from shared.events import PHASE_NAMES, Event, PhaseFailed
from shared.service_app import ServiceContext

logger = logging.getLogger(__name__)

Step = Callable[[UnitOfWork], Awaitable[None]]
FailureHook = Callable[[UnitOfWork, str], Awaitable[None]]


class PhaseError(Exception):
    """An expected failure of a phase (a gate, a bad spec): reported with this reason."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or {}


async def run_phase_step(
    context: ServiceContext,
    event: Event,
    consumer: str,
    phase: int,
    step: Step,
    on_failure: FailureHook | None = None,
) -> bool:
    """True when the step ran and committed; False for a redelivery or a reported failure."""
    try:
        async with context.unit_of_work() as uow:
            if not await uow.first_time(consumer, event.event_id):
                return False
            await step(uow)
        return True
    except PhaseError as exc:
        reason, details = exc.reason, exc.details
    except Exception as exc:
        logger.exception(
            "%s: %s failed for workflow %s", consumer, type(event).__name__, event.workflow_id
        )
        reason = f"{PHASE_NAMES[phase]} failed: {type(exc).__name__}: {exc}"
        details = {}
    async with context.unit_of_work() as uow:
        if not await uow.first_time(consumer, event.event_id):
            return False
        if on_failure is not None:
            await on_failure(uow, reason)
        await uow.emit(
            PhaseFailed(
                phase=phase,
                reason=reason,
                details=details,
                workflow_id=event.workflow_id,
                tenant_id=event.tenant_id,
            )
        )
    return False
