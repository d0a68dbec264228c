"""When a workflow's nodes do not all register in time, the cluster fails and reports why
(`nexus.cluster.started` with the error, which the trainer turns into phase 2's failure).
(Its own app: a short registration timeout.)"""

from __future__ import annotations

from typing import Any

import psutil

from services.cluster.app import create_app
from services.cluster.settings import ClusterSettings
from tests.services.cluster.conftest import wait_until
from tests.support import as_service, running


async def test_nodes_that_never_register_fail_the_cluster_with_the_reason(
    memory_url: str, watch: Any, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    settings = ClusterSettings(memory_url=memory_url, node_registration_timeout_s=1.0)  # type: ignore[call-arg]
    app = create_app(settings)
    failures = await watch("nexus.cluster.started")
    async with running(app) as client:
        # The nodes get a NATS address where nothing listens, so none can register.
        app.state.context.state.manager.env["NEXUS_NATS_URL"] = "nats://127.0.0.1:9"
        submitted = await client.post(
            "/workflows", json={"name": "lonely", "dataset": "wine"}, headers=headers
        )
        workflow_id = submitted.json()["id"]

        failed = await failures.wait_for(lambda e: e["workflow_id"] == workflow_id, timeout=30)
        assert failed["error"] == "only 0 of 4 nodes registered in time"
        assert failed["nodes"] == [] and failed["spec"]["dataset"] == "wine"

        async def cluster_failed() -> dict[str, Any] | None:
            [cluster] = (await client.get("/clusters", headers=headers)).json()
            return cluster if cluster["status"] == "failed" else None

        cluster = await wait_until(cluster_failed, timeout=20)
        assert cluster["error"] == failed["error"]
        assert all(n["status"] in ("lost", "stopped") for n in cluster["nodes"])
        assert not any(psutil.pid_exists(n["pid"]) for n in cluster["nodes"] if n["pid"])
