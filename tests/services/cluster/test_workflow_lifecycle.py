"""A valid POST /workflows runs phase 1, and its Phase1Completed starts four real node
processes that register, heartbeat and prove their topology with a gloo all_reduce; the
workflow's end stops them."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from typing import Any

import httpx
import psutil
from fastapi import FastAPI
from nats.aio.client import Client

from shared.contracts import PhaseFailed
from tests.services.cluster.conftest import publish, wait_until
from tests.support import as_service, memory_keys

SPEC = {"name": "iris-nodes", "dataset": "iris", "training": {"epochs": 3}}
# Four node processes start and three of them import torch: allow for a busy machine.
READY_TIMEOUT_S = 120


async def test_submit_sets_up_the_workflow_and_its_nodes_come_up_connected(
    app: FastAPI,
    client: httpx.AsyncClient,
    nc: Client,
    watch: Any,
    memory_url: str,
    internal_token: str,
    tenant_id: str,
) -> None:
    headers = as_service(internal_token, tenant_id)
    ready_events = await watch("nexus.cluster.started")
    phase1_events = await watch("nexus.phase1.completed")

    response = await client.post("/workflows", json=SPEC, headers=headers)

    assert response.status_code == 202
    workflow = response.json()
    workflow_id = workflow["id"]
    assert workflow["status"] == "running" and workflow["current_phase"] == 2
    assert [p["status"] for p in workflow["phases"]] == [
        "completed",
        "running",
        "pending",
        "pending",
        "pending",
    ]
    phase1 = await phase1_events.wait_for(lambda e: e["workflow_id"] == workflow_id, timeout=20)
    cluster_id = phase1["cluster_id"]
    assert phase1["spec"]["dataset"] == "iris"

    # Phase 1's memory keys, in the memory service.
    values = await memory_keys(memory_url, headers, workflow_id, {"neural/phase1-complete"})
    assert values["neural/cluster-id"] == cluster_id
    assert values["neural/config"]["training"]["epochs"] == 3
    assert values["neural/phase1-complete"]["files"] == [
        "neural/configs/training.json",
        "neural/configs/dataset.json",
        "neural/configs/monitoring.json",
    ]

    # Phase 1's files, in the artifact store and in the bundle.
    store = app.state.context.artifacts
    dataset = json.loads(
        store.read_text(store.workflow_url(tenant_id, workflow_id, "neural/configs/dataset.json"))
    )
    assert dataset["name"] == "iris" and dataset["features"] == 4 and dataset["classes"] == 3
    bundle = await client.get(f"/workflows/{workflow_id}/bundle", headers=headers)
    assert bundle.headers["content-type"] == "application/gzip"
    with tarfile.open(fileobj=io.BytesIO(bundle.content), mode="r:gz") as tar:
        assert "neural/configs/training.json" in tar.getnames()
        training = json.load(tar.extractfile("neural/configs/training.json"))  # type: ignore[arg-type]
    assert training["epochs"] == 3

    # Phase 2, node half: four processes register and the topology is connected.
    ready = await ready_events.wait_for(
        lambda e: e["workflow_id"] == workflow_id, timeout=READY_TIMEOUT_S
    )
    roles = sorted(n["role"] for n in ready["nodes"])
    assert roles == ["parameter_server", "validator", "worker", "worker"]
    heartbeats = await nc.subscribe(f"nodes.{cluster_id}.*.heartbeat")
    cluster = (await client.get(f"/clusters/{cluster_id}", headers=headers)).json()
    assert cluster["status"] == "ready" and cluster["workflow_id"] == workflow_id
    assert cluster["topology"]["connected"] and cluster["topology"]["world_size"] == 3
    assert {c["check"] for c in cluster["topology"]["checks"]} == {"rendezvous", "connect", "ping"}
    # The coordinator is the parameter server; jobs meet at its store, on a port of its host.
    coordinator = next(n for n in cluster["nodes"] if n["role"] == "parameter_server")
    rendezvous = cluster["topology"]["rendezvous"]
    assert rendezvous["node_id"] == coordinator["id"] == cluster["topology"]["master"]
    assert rendezvous["host"] == coordinator["host"] and rendezvous["backend"] == "gloo"
    pids = [n["pid"] for n in cluster["nodes"]]
    assert all(n["status"] == "registered" for n in cluster["nodes"])
    assert all(psutil.pid_exists(pid) for pid in pids)

    beat = json.loads((await heartbeats.next_msg(timeout=5)).data)
    assert beat["pid"] in pids
    await heartbeats.unsubscribe()

    validator = next(n for n in cluster["nodes"] if n["role"] == "validator")
    body = {"task_id": str(uuid.uuid4()), "kind": "ping", "payload": {}}
    reply = await nc.request(f"nodes.{validator['id']}.task", json.dumps(body).encode(), timeout=5)
    assert json.loads(reply.data)["node"]["pid"] == validator["pid"]

    values = await memory_keys(memory_url, headers, workflow_id, {"neural/nodes-deployed"})
    deployed = values["neural/nodes-deployed"]
    assert deployed["topology"]["connected"] is True
    assert len(deployed["nodes"]) == 4

    # The workflow fails later on: its nodes are released (SIGTERM) and their processes end.
    await publish(
        nc,
        PhaseFailed(workflow_id=uuid.UUID(workflow_id), tenant_id=tenant_id, phase=3, reason="x"),
    )

    async def released() -> dict[str, Any] | None:
        body = (await client.get(f"/clusters/{cluster_id}", headers=headers)).json()
        return body if body["status"] == "stopped" else None

    stopped = await wait_until(released, timeout=30)
    assert all(n["status"] == "stopped" for n in stopped["nodes"])

    # The processes are stopped right after that commit (SIGTERM, then a grace period).
    async def ended() -> bool | None:
        return not any(psutil.pid_exists(pid) for pid in pids) or None

    assert await wait_until(ended, timeout=15)
    final = (await client.get(f"/workflows/{workflow_id}", headers=headers)).json()
    assert final["status"] == "failed"
