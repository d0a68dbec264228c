"""Runs one step of a phase for one event, exactly once, and is the one way a phase fails.

A handler that raised would nak its message and JetStream would redeliver it forever, so a
step's failure is reported instead: the step's transaction is rolled back and a second one
records the event as handled and emits `PhaseFailed`. A step that failed because the
database went away (a restart) is not the phase's failure: the handler raises, and the
redelivery, after a pause, is what we want; so too when reporting the failure fails.

Every phase owner (cluster: 1, trainer: 2 and 3, validator: 4, deployer: 5) runs its steps
here and reports a failure with `PhaseError` from inside a step, or `fail_phase` from code
that already holds a unit of work.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shared.contracts import PHASE_NAMES, Event, PhaseFailed
from shared.db import UnitOfWork, transient_failure
from shared.service_app import AnyContext

logger = logging.getLogger(__name__)

T = TypeVar("T")
Step = Callable[[UnitOfWork], Awaitable[T]]
FailureHook = Callable[[UnitOfWork, str], Awaitable[None]]


class PhaseError(Exception):
    """An expected failure of a phase (a gate, a node that refused): reported with this
    reason and details, instead of being retried."""

    def __init__(self, reason: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or {}


def phase_failed(
    phase: int,
    workflow_id: uuid.UUID,
    tenant_id: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> PhaseFailed:
    """The event that says `phase` of a workflow failed, and why."""
    return PhaseFailed(
        phase=phase,
        reason=reason,
        details=details or {},
        workflow_id=workflow_id,
        tenant_id=tenant_id,
    )


async def fail_phase(
    uow: UnitOfWork,
    phase: int,
    workflow_id: uuid.UUID,
    tenant_id: str,
    reason: str,
    details: dict[str, Any] | None = None,
) -> None:
    """Report that `phase` of a workflow failed (published after the unit commits)."""
    await uow.emit(phase_failed(phase, workflow_id, tenant_id, reason, details))


async def run_phase_step(
    context: AnyContext,
    event: Event,
    consumer: str,
    phase: int,
    step: Step[T],
    on_failure: FailureHook | None = None,
) -> T | None:
    """The step's result once it ran and committed; None for a redelivery or a reported
    failure. A step that leaves work for after the commit (a node task) returns it."""
    try:
        async with context.unit_of_work() as uow:
            if not await uow.first_time(consumer, event.event_id):
                return None
            return await step(uow)
    except PhaseError as exc:
        reason, details = exc.reason, exc.details
    except Exception as exc:
        transient = transient_failure(exc)
        if transient is not None:
            logger.warning("%s: %s (%s); to be redelivered", consumer, transient, exc)
            raise
        logger.exception(
            "%s: %s failed for workflow %s", consumer, type(event).__name__, event.workflow_id
        )
        reason = f"{PHASE_NAMES[phase]} failed: {type(exc).__name__}: {exc}"
        details = {}
    async with context.unit_of_work() as uow:
        if not await uow.first_time(consumer, event.event_id):
            return None
        if on_failure is not None:
            await on_failure(uow, reason)
        await fail_phase(uow, phase, event.workflow_id, event.tenant_id, reason, details)
    return None
