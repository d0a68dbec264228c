"""How a job that lost a worker goes on, planned on the job's record alone: with an idle
node in the lost one's place, else one worker fewer; and back to full width when a
replacement worker joins, without spending one of its restarts."""

from __future__ import annotations

import uuid
from typing import Any

from services.trainer.models import TrainingJob
from services.trainer.service.recovery import (
    RECOVERING,
    _commit_layout,
    _grow,
    _plan,
    went_on,
)

SPEC = {"name": "grow", "dataset": "digits", "training": {"strategy": "ddp"}}


def _member(node_id: str, role: str = "worker") -> dict[str, Any]:
    return {"node_id": node_id, "role": role, "host": "127.0.0.1"}


def _job(
    members: list[str], spares: list[str], *, wanted: int = 2, strategy: str = "ddp"
) -> TrainingJob:
    config = {
        "spec": SPEC,
        "strategy": strategy,
        "members": [_member(m) for m in members],
        "servers": 0,
        "workers_wanted": wanted,
        "spares": [_member(s) for s in spares],
        "rendezvous": {"node_id": "ps-0"},
        "attempt": 0,
        "restarts": 0,
        "recoveries": [],
    }
    return TrainingJob(
        id=uuid.uuid4(), tenant_id="t", status="running", node_id=members[0], config=config
    )


def test_a_lost_worker_without_a_spare_leaves_the_job_one_worker_narrower() -> None:
    job = _job(["w-0", "w-1"], spares=[])
    plan = _plan(job, dict(job.config), "w-1")
    assert plan.members == ["w-0"] and plan.survivors == ["w-0"] and plan.attempt == 1


def test_a_joining_worker_takes_a_narrowed_job_back_to_full_width() -> None:
    job = _job(["w-0"], spares=["w-1-r1"])
    job.config = {**job.config, "restarts": 1, "attempt": 1, "recoveries": [{"attempt": 1}]}
    grown = _grow(job, dict(job.config), "worker")
    assert grown is not None
    assert grown.members == ["w-0", "w-1-r1"] and grown.survivors == ["w-0"]
    assert grown.attempt == 2 and not grown.new_rendezvous

    _commit_layout(job, dict(job.config), grown, restart=False, grown_back_with="w-1-r1")
    assert job.status == RECOVERING
    assert [m["node_id"] for m in job.config["members"]] == ["w-0", "w-1-r1"]
    assert job.config["spares"] == [] and job.config["attempt"] == 2
    assert job.config["restarts"] == 1, "growing back spent a restart"
    assert job.config["recoveries"][-1]["grown_back_with"] == "w-1-r1"


def test_a_worker_that_joined_while_the_job_recovered_is_taken_in_once_it_runs() -> None:
    job = _job(["w-0"], spares=["w-1-r1"])
    job.status = RECOVERING  # attempt 1 starting; w-1-r1 joined meanwhile, kept as a spare
    job.config = {**job.config, "restarts": 1, "attempt": 1, "recoveries": [{"attempt": 1}]}
    grown = went_on(job)
    assert grown is not None and grown.members == ["w-0", "w-1-r1"] and grown.attempt == 2
    assert job.status == RECOVERING and job.config["recoveries"][-1]["grown_back_with"] == "w-1-r1"

    full = _job(["w-0", "w-1"], spares=[])
    full.status = RECOVERING
    assert went_on(full) is None and full.status == "running"


def test_a_parameter_server_job_grows_back_with_its_servers_first() -> None:
    job = _job(["w-0"], spares=["w-1-r1"], strategy="parameter_server")
    server = _member("ps-0", "parameter_server")
    job.config = {**job.config, "members": [server, *job.config["members"]], "servers": 1}
    grown = _grow(job, dict(job.config), "worker")
    assert grown is not None and grown.members == ["ps-0", "w-0", "w-1-r1"]
    _commit_layout(job, dict(job.config), grown, restart=False, grown_back_with="w-1-r1")
    assert job.config["servers"] == 1 and job.node_id == "w-0", "the lead is the first worker"


def test_a_full_width_job_another_role_or_strategy_does_not_grow() -> None:
    full = _job(["w-0", "w-1"], spares=["w-2"])
    assert _grow(full, dict(full.config), "worker") is None
    narrowed = _job(["w-0"], spares=[])
    narrowed.config = {**narrowed.config, "spares": [_member("v-0", "validator")]}
    assert _grow(narrowed, dict(narrowed.config), "validator") is None
    single = _job(["w-0"], spares=["w-1-r1"], wanted=1, strategy="single")
    assert _grow(single, dict(single.config), "worker") is None
    recovering = _job(["w-0"], spares=["w-1-r1"])
    recovering.status = RECOVERING  # its own recovery is still starting: not now
    assert _grow(recovering, dict(recovering.config), "worker") is None
