"""How a workflow's record moves; the cluster service keeps it for every phase. Events of
different consumers may be handled in any order, so every transition is monotonic: a phase
goes pending -> running -> completed|failed and never back, and a finished workflow stays
finished."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.cluster.models import Workflow, WorkflowPhase
from services.cluster.schemas import PhaseOut, ProgressOut, ResultOut, WorkflowOut

TERMINAL = ("completed", "failed")
LAST_PHASE = 5


def _merge(current: dict[str, Any] | None, extra: dict[str, Any] | None) -> dict[str, Any] | None:
    # JSON columns change only when assigned a new object.
    if not extra:
        return current
    return {**(current or {}), **extra}


def record_phase_started(
    workflow: Workflow, phase: WorkflowPhase, now: datetime | None = None
) -> None:
    if workflow.status in TERMINAL or phase.status != "pending":
        return
    now = now or datetime.now(UTC)
    phase.status, phase.started_at = "running", now
    workflow.status = "running"
    workflow.current_phase = max(workflow.current_phase, phase.phase)
    workflow.updated_at = now


def record_phase_completed(
    workflow: Workflow,
    phases: dict[int, WorkflowPhase],
    number: int,
    detail: dict[str, Any] | None = None,
) -> bool:
    """Mark phase `number` completed (and any earlier one a late event has not closed yet) and
    start the next; the last phase completes the workflow. A finished workflow keeps its
    status, but its phase rows still record what happened."""
    phase = phases[number]
    if phase.status in TERMINAL:
        return False
    now = datetime.now(UTC)
    for earlier in range(1, number + 1):
        row = phases[earlier]
        if row.status not in TERMINAL:
            row.status, row.finished_at = "completed", now
            row.started_at = row.started_at or now
    phase.detail = _merge(phase.detail, detail)
    workflow.updated_at = now
    if workflow.status in TERMINAL:
        return True
    workflow.current_phase = max(workflow.current_phase, number)
    if number == LAST_PHASE:
        workflow.status = "completed"
    else:
        workflow.status = "running"
        record_phase_started(workflow, phases[number + 1], now)
    return True


def record_phase_failed(
    workflow: Workflow, phases: dict[int, WorkflowPhase], number: int, reason: str
) -> bool:
    if workflow.status in TERMINAL:
        return False
    now = datetime.now(UTC)
    phase = phases[number]
    if phase.status not in TERMINAL:
        phase.status, phase.finished_at = "failed", now
        phase.started_at = phase.started_at or now
        phase.detail = _merge(phase.detail, {"reason": reason})
    workflow.status, workflow.error = "failed", reason
    workflow.current_phase = number
    workflow.updated_at = now
    return True


def record_progress(
    workflow: Workflow, phases: dict[int, WorkflowPhase], progress: dict[str, Any]
) -> bool:
    if workflow.status in TERMINAL:
        return False
    current = workflow.progress or {}
    if current.get("epoch") is not None and progress["epoch"] < current["epoch"]:
        return False  # a late, older epoch
    workflow.progress = progress
    workflow.updated_at = datetime.now(UTC)
    record_phase_started(workflow, phases[3])
    return True


def record_result(workflow: Workflow, values: dict[str, Any]) -> None:
    workflow.result = _merge(workflow.result, {k: v for k, v in values.items() if v is not None})
    workflow.updated_at = datetime.now(UTC)


def workflow_out(
    workflow: Workflow, phases: list[WorkflowPhase], queue_position: int | None = None
) -> WorkflowOut:
    return WorkflowOut(
        id=workflow.id,
        name=workflow.name,
        status=workflow.status,
        current_phase=workflow.current_phase,
        phases=[
            PhaseOut(
                phase=p.phase,
                name=p.name,
                status=p.status,
                started_at=p.started_at,
                finished_at=p.finished_at,
                detail=p.detail,
            )
            for p in sorted(phases, key=lambda p: p.phase)
        ],
        progress=ProgressOut.model_validate(workflow.progress) if workflow.progress else None,
        error=workflow.error,
        result=ResultOut.model_validate(workflow.result) if workflow.result else None,
        queue_position=queue_position,
        created_at=workflow.created_at,
        updated_at=workflow.updated_at,
    )
