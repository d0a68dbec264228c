"""Phase 2's node gate: when a workflow's nodes do not all register in time, phase 2 fails
with the reason and the workflow fails. (Its own app: a short registration timeout.)"""

from __future__ import annotations

from typing import Any

import psutil
from services.cluster.runtime import runtime_of

from services.cluster.app import create_app
from services.cluster.settings import ClusterSettings
from tests.services.cluster.conftest import wait_until
from tests.support import as_service, running


async def test_nodes_that_never_register_fail_phase_2(
    memory_url: str, watch: Any, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    settings = ClusterSettings(memory_url=memory_url, node_registration_timeout_s=1.0)  # type: ignore[call-arg]
    app = create_app(settings)
    failures = await watch("nexus.phase2.failed")
    async with running(app) as client:
        # The nodes get a NATS address where nothing listens, so none can register.
        runtime_of(app.state.context).manager.env["NEXUS_NATS_URL"] = "nats://127.0.0.1:9"
        submitted = await client.post(
            "/workflows", json={"name": "lonely", "dataset": "wine"}, headers=headers
        )
        workflow_id = submitted.json()["id"]

        failed = await failures.wait_for(lambda e: e["workflow_id"] == workflow_id, timeout=30)
        assert failed["reason"] == "only 0 of 4 nodes registered in time"

        async def workflow_failed() -> dict[str, Any] | None:
            body: dict[str, Any] = (
                await client.get(f"/workflows/{workflow_id}", headers=headers)
            ).json()
            return body if body["status"] == "failed" else None

        workflow = await wait_until(workflow_failed, timeout=20)
        assert workflow["current_phase"] == 2 and workflow["error"] == failed["reason"]
        [cluster] = (await client.get("/clusters", headers=headers)).json()
        assert cluster["status"] == "failed" and cluster["error"] == failed["reason"]
        assert all(n["status"] in ("lost", "stopped") for n in cluster["nodes"])
        assert not any(psutil.pid_exists(n["pid"]) for n in cluster["nodes"] if n["pid"])
