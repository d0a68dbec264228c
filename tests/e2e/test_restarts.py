"""Each service killed with SIGKILL in the middle of a workflow and started again: the
workflow completes, and no phase runs twice (one cluster, one training job that never had to
recover, one validation, one deployment). The cluster service's nodes train on while it is
down, and the restarted service adopts them."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import httpx
import pytest

from cli.stack import load_state, resolve_home, restart
from tests.e2e.test_digits_workflow import digits_spec, wait_for_workflow

pytestmark = pytest.mark.e2e


async def _wait_for_phase(client: httpx.AsyncClient, workflow_id: str, phase: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workflow = (await client.get(f"/workflows/{workflow_id}")).json()
        assert workflow["status"] not in ("completed", "failed"), workflow["error"]
        started = workflow["phases"][phase - 1]["status"] != "pending"
        if phase == 3 and started:  # into the training loop, not only dispatched
            started = (workflow["progress"] or {}).get("epoch", 0) >= 2
        if started:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"workflow {workflow_id} did not reach phase {phase}")


async def _training_epoch(trainer: httpx.AsyncClient, workflow_id: str) -> int:
    (job,) = (await trainer.get("/jobs", params={"workflow_id": workflow_id})).json()["jobs"]
    return len((await trainer.get(f"/jobs/{job['id']}/metrics")).json()["epochs"])


def _kill(stack: Any, name: str) -> None:
    record = load_state(resolve_home(stack.home)).process(name)
    assert record is not None
    os.kill(record.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("service", "phase"),
    [
        ("cluster", 3),
        ("trainer", 3),
        ("memory", 3),
        ("auth", 3),
        ("validator", 4),
        ("deployer", 5),
    ],
)
async def test_a_service_killed_mid_workflow_and_restarted_loses_nothing(
    stack: Any, user_token: str, cluster_client: httpx.AsyncClient, service: str, phase: int
) -> None:
    spec = digits_spec()
    spec["name"] = f"digits-restart-{service}"
    if service == "cluster":  # epochs long enough to train on while the service is down
        spec["training"] |= {"batch_size": 8}
    posted = await cluster_client.post("/workflows", json=spec)
    assert posted.status_code == 202, posted.text
    workflow_id = posted.json()["id"]
    await _wait_for_phase(cluster_client, workflow_id, phase)
    headers = {"Authorization": f"Bearer {user_token}"}
    async with httpx.AsyncClient(base_url=stack.url("trainer"), headers=headers) as trainer:
        _kill(stack, service)
        if service == "cluster":
            # The nodes go on training without it: the trainer hears their epochs.
            before = await _training_epoch(trainer, workflow_id)
            await asyncio.sleep(3)
            assert await _training_epoch(trainer, workflow_id) > before
        await asyncio.to_thread(restart, service, stack.home)

        workflow = await wait_for_workflow(cluster_client, workflow_id, timeout=240)
        assert workflow["status"] == "completed", (workflow["error"], workflow["phases"])
        assert workflow["result"]["test_accuracy"] >= 0.9

        # No phase ran twice.
        assert [p["status"] for p in workflow["phases"]] == ["completed"] * 5
        clusters = (await cluster_client.get("/clusters", params={"limit": 500})).json()
        assert [c["workflow_id"] for c in clusters].count(workflow_id) == 1
        (job,) = (await trainer.get("/jobs", params={"workflow_id": workflow_id})).json()["jobs"]
        assert job["recoveries"] == [], "a node was lost, or its training was started again"
    async with httpx.AsyncClient(base_url=stack.url("validator"), headers=headers) as validator:
        found = await validator.get("/validations", params={"workflow_id": workflow_id})
        assert len(found.json()["validations"]) == 1
