"""The broker and the database restarted under a running workflow, on a stack of its own
with the embedded NATS and Postgres (the shared ones are not this test's to restart): the
workflow completes, no event is lost (JetStream keeps streams and consumers on disk;
publishers retry) and no commit is lost (services reconnect and handlers are redelivered)."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import restart, start_stack, stop_stack
from shared.settings import SERVICE_PORTS
from tests.e2e.conftest import e2e_model_ports
from tests.e2e.test_digits_workflow import digits_spec, wait_for_workflow
from tests.e2e.test_faults import wait_for_epoch
from tests.infrastructure import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack() -> Iterator[Any]:
    # Not under pytest's tmp_path, which a later pytest session run as root locks away
    # from the embedded Postgres user (see tests/cli/conftest.py).
    base = Path(tempfile.mkdtemp(prefix="nexus-e2e-infra-"))
    overrides = {f"NEXUS_{name.upper()}_PORT": str(free_port()) for name in SERVICE_PORTS}
    overrides |= {
        "NEXUS_DATABASE_URL": "",  # empty: the stack starts its own
        "NEXUS_NATS_URL": "",
        "NEXUS_CONSUMER_PREFIX": f"e2e-{secrets.token_hex(4)}-",
        "NEXUS_RESTORE_ON_STARTUP": "false",
        **e2e_model_ports(),
    }
    info = start_stack(base / "home", overrides, timeout=180)
    try:
        yield info
    finally:
        stop_stack(base / "home")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("component", ["nats", "postgres"])
async def test_a_workflow_survives_a_restart_of_the_broker_or_the_database(
    stack: Any, user_token: str, cluster_client: httpx.AsyncClient, component: str
) -> None:
    spec = digits_spec()
    spec["name"] = f"digits-restart-{component}"
    spec["training"] |= {"batch_size": 16}  # long enough to restart it mid-training
    posted = await cluster_client.post("/workflows", json=spec)
    assert posted.status_code == 202, posted.text
    workflow_id = posted.json()["id"]
    await wait_for_epoch(cluster_client, workflow_id, 3)

    await asyncio.to_thread(restart, component, stack.home)

    workflow = await wait_for_workflow(cluster_client, workflow_id, timeout=240)
    assert workflow["status"] == "completed", (workflow["error"], workflow["phases"])
    assert workflow["result"]["test_accuracy"] >= 0.9
    headers = {"Authorization": f"Bearer {user_token}"}
    async with httpx.AsyncClient(base_url=stack.url("trainer"), headers=headers) as trainer:
        (job,) = (await trainer.get("/jobs", params={"workflow_id": workflow_id})).json()["jobs"]
        epochs = (await trainer.get(f"/jobs/{job['id']}/metrics")).json()["epochs"]
    # Every epoch's report reached the trainer and was committed: none lost, none twice.
    assert [e["epoch"] for e in epochs] == list(range(1, job["metrics"]["epochs_run"] + 1))
    assert job["recoveries"] == [], "a node was declared lost during the restart"
