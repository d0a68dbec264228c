"""How phase deadlines are sized: fixed per phase, training's from the spec and its pace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.cluster.models import Workflow, WorkflowPhase
from services.cluster.service.deadlines import (
    DeadlinePolicy,
    deadline_of,
    extend_for_epoch,
    stamp_deadlines,
)

POLICY = DeadlinePolicy(phase_s=120, setup_s=240, first_epoch_s=600, epoch_factor=3)
STARTED = datetime(2026, 1, 1, tzinfo=UTC)


def _workflow(training: dict[str, Any] | None = None) -> Workflow:
    return Workflow(spec={"training": training or {}}, created_at=STARTED, progress=None)


def _phases(running: int) -> dict[int, WorkflowPhase]:
    return {
        n: WorkflowPhase(
            phase=n,
            status="running" if n == running else ("completed" if n < running else "pending"),
            started_at=STARTED if n == running else None,
            detail=None,
        )
        for n in range(1, 6)
    }


def test_each_running_phase_gets_its_deadline_from_its_start() -> None:
    for number, seconds in [(1, 120), (2, 240), (3, 600), (4, 120), (5, 120)]:
        phases = _phases(number)
        stamp_deadlines(POLICY, _workflow(), phases)
        expected = STARTED + timedelta(seconds=seconds)
        assert deadline_of(POLICY, _workflow(), phases[number]) == expected
        assert phases[number].detail == {"deadline_at": expected.isoformat()}
        assert all(p.detail is None for n, p in phases.items() if n != number)


def test_training_deadline_follows_the_pace_of_the_last_epoch() -> None:
    workflow, phases = _workflow(), _phases(3)
    before = datetime.now(UTC)
    extend_for_epoch(POLICY, workflow, phases, {"epoch": 4, "epochs": 10}, epoch_seconds=2.0)
    deadline = deadline_of(POLICY, workflow, phases[3])
    # Six epochs left at three times the last one's 2 s, plus the margin.
    expected = before + timedelta(seconds=6 * 2.0 * 3 + 120)
    assert expected <= deadline < expected + timedelta(seconds=5)


def test_a_deadline_in_the_spec_is_kept_whatever_the_pace() -> None:
    workflow, phases = _workflow({"deadline_s": 30}), _phases(3)
    stamp_deadlines(POLICY, workflow, phases)
    extend_for_epoch(POLICY, workflow, phases, {"epoch": 1, "epochs": 1000}, epoch_seconds=9.0)
    assert deadline_of(POLICY, workflow, phases[3]) == STARTED + timedelta(seconds=30)
