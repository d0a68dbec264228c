"""Every running phase has a deadline, so no workflow waits forever: not on a node that hangs,
a service that is down, nor a run far slower than it should be. Past it the phase fails with
the reason, which (like any failure) stops the workflow's nodes.

The deadline is kept in the phase's detail as `deadline_at`, where the user sees it. Training's
is sized from the spec: until the first epoch is reported it is the start-up budget; after
each epoch it is the remaining epochs at that epoch's pace times a factor, plus the margin
every phase gets. A spec's `training.deadline_s` replaces the estimate with a fixed bound."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.cluster.models import Workflow, WorkflowPhase
from services.cluster.repository import WorkflowRepository
from services.cluster.service.status import record_phase_failed
from services.cluster.settings import ClusterSettings
from shared.contracts import PHASE_NAMES
from shared.db import SYSTEM, UnitOfWork
from shared.phases import fail_phase

logger = logging.getLogger(__name__)

SETUP_PHASE, TRAINING_PHASE = 2, 3


@dataclass(frozen=True)
class DeadlinePolicy:
    phase_s: float  # any phase but training; also training's margin
    setup_s: float  # phase 2: the nodes start, register and prove their topology
    first_epoch_s: float  # training before its first epoch is reported
    epoch_factor: float  # how much slower than its last epoch the rest may run

    @classmethod
    def from_settings(cls, settings: ClusterSettings) -> DeadlinePolicy:
        return cls(
            phase_s=settings.phase_deadline_s,
            setup_s=settings.node_registration_timeout_s
            + settings.topology_timeout_s
            + settings.phase_deadline_s,
            first_epoch_s=settings.training_first_epoch_deadline_s,
            epoch_factor=settings.training_deadline_factor,
        )

    def at_start(self, workflow: Workflow, phase: int, started_at: datetime) -> datetime:
        if phase == SETUP_PHASE:
            return started_at + timedelta(seconds=self.setup_s)
        if phase == TRAINING_PHASE:
            fixed = _spec_deadline_s(workflow)
            return started_at + timedelta(seconds=fixed or self.first_epoch_s)
        return started_at + timedelta(seconds=self.phase_s)

    def after_epoch(
        self, workflow: Workflow, epoch: int, epochs: int, epoch_seconds: float, now: datetime
    ) -> datetime | None:
        """Training's deadline once `epoch` took `epoch_seconds`; None if the spec fixed it."""
        if _spec_deadline_s(workflow):
            return None
        remaining = max(epochs - epoch, 0) * epoch_seconds * self.epoch_factor
        return now + timedelta(seconds=remaining + self.phase_s)


def _spec_deadline_s(workflow: Workflow) -> float | None:
    training = (workflow.spec or {}).get("training") or {}
    value = training.get("deadline_s")
    return float(value) if value else None


def deadline_of(policy: DeadlinePolicy, workflow: Workflow, phase: WorkflowPhase) -> datetime:
    recorded = (phase.detail or {}).get("deadline_at")
    if recorded:
        return datetime.fromisoformat(recorded)
    return policy.at_start(workflow, phase.phase, phase.started_at or workflow.created_at)


def stamp_deadlines(
    policy: DeadlinePolicy, workflow: Workflow, phases: dict[int, WorkflowPhase]
) -> None:
    """Record the deadline of every running phase that has none yet."""
    for phase in phases.values():
        if phase.status == "running" and not (phase.detail or {}).get("deadline_at"):
            _set_deadline(phase, deadline_of(policy, workflow, phase))


def extend_for_epoch(
    policy: DeadlinePolicy,
    workflow: Workflow,
    phases: dict[int, WorkflowPhase],
    progress: dict[str, Any],
    epoch_seconds: float,
) -> None:
    phase = phases[TRAINING_PHASE]
    if phase.status != "running" or progress.get("epoch") is None:
        return
    deadline = policy.after_epoch(
        workflow, progress["epoch"], progress["epochs"], epoch_seconds, datetime.now(UTC)
    )
    if deadline is not None:
        _set_deadline(phase, deadline)


def _set_deadline(phase: WorkflowPhase, deadline: datetime) -> None:
    # A new object: JSON columns change only when assigned one.
    phase.detail = {**(phase.detail or {}), "deadline_at": deadline.isoformat()}


async def fail_overdue_phases(policy: DeadlinePolicy, uow: UnitOfWork) -> int:
    """Fail every running phase past its deadline; the failure event stops the workflow's
    nodes and tells the phase's owner. Returns how many failed."""
    now = datetime.now(UTC)
    workflows = WorkflowRepository(uow.session, SYSTEM)
    overdue = [
        (workflow.id, phase.phase)
        for workflow, phase in await workflows.running_phases()
        if deadline_of(policy, workflow, phase) < now
    ]
    failed = 0
    for workflow_id, number in overdue:
        workflow = await workflows.get(workflow_id, for_update=True)
        if workflow is None:
            continue
        phases = await workflows.phases_of(workflow_id)
        phase = phases[number]
        if phase.status != "running":
            continue  # it moved on since the look
        started = phase.started_at or workflow.created_at
        limit = (deadline_of(policy, workflow, phase) - started).total_seconds()
        reason = (
            f"phase {number} ({PHASE_NAMES[number]}) did not finish by its deadline, {limit:.0f} s "
            f"after it started{_why_this_long(workflow, number)}"
        )
        logger.warning("workflow %s: %s", workflow_id, reason)
        if record_phase_failed(workflow, phases, number, reason):
            await fail_phase(uow, number, workflow.id, workflow.tenant_id, reason)
            failed += 1
    return failed


def _why_this_long(workflow: Workflow, phase: int) -> str:
    if phase != TRAINING_PHASE:
        return ""
    fixed = _spec_deadline_s(workflow)
    if fixed:
        return " (training.deadline_s)"
    progress = workflow.progress or {}
    if progress.get("epoch") is None:
        return " (no epoch was reported)"
    return f" (epoch {progress['epoch']} of {progress['epochs']} was the last reported)"
