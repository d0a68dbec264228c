"""POST /workflows input checks, reads, SSE, and the `workflow.requested` refusals, against a
real Postgres and NATS. None of these start node processes."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from nats.aio.client import Client

from shared.contracts import WorkflowRequested
from tests.services.cluster.conftest import (
    count_workflows,
    handled,
    publish,
    seed_workflow,
    wait_until,
)
from tests.support import as_service

VALID = {"name": "digits-test", "dataset": "digits"}
WORKFLOW_KEYS = {
    "id",
    "name",
    "status",
    "current_phase",
    "phases",
    "progress",
    "error",
    "result",
    "queue_position",
    "created_at",
    "updated_at",
}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"dataset": "digits"}, "name"),
        ({**VALID, "dataset": "imagenet"}, "dataset"),
        ({**VALID, "model": {"hidden_layers": [0]}}, "model.hidden_layers"),
        ({**VALID, "model": {"hidden_layers": [8] * 9}}, "model.hidden_layers"),
        ({**VALID, "colour": "red"}, "colour"),
        (
            {**VALID, "model": {"type": "layers", "layers": [{"type": "conv2d", "filters": 8}]}},
            "layers[0] conv2d expects 4-D input (N, C, H, W), got (N, 64)",
        ),
        (
            {
                **VALID,
                "model": {
                    "type": "layers",
                    "input_shape": [1, 8, 8],
                    "layers": [{"type": "conv2d", "filters": 8, "kernel_size": 3}],
                },
            },
            "the layers end with (N, 8, 8, 8)",
        ),
        ({**VALID, "model": {"type": "auto", "input_shape": [3, 8, 8]}}, "holds 192 values"),
        ({**VALID, "model": {"type": "layers", "layers": [{"type": "lstm"}]}}, "model.layers"),
        ({**VALID, "gates": {"min_accuracy": 0.5}}, "gates.min_accuracy"),
        ({**VALID, "gates": {"max_p99_latency_ms": 500}}, "gates.max_p99_latency_ms"),
        ({**VALID, "dataset": "diabetes", "gates": {"min_r2": 0.1}}, "gates.min_r2"),
        ({**VALID, "dataset": "diabetes", "gates": {"min_accuracy": 0.9}}, "gates.min_accuracy"),
        ({**VALID, "dataset": "synthetic_regression?classes=3"}, "unknown knob 'classes'"),
        ({**VALID, "cluster": {"workers": 1}}, "cluster has 3 nodes"),
        ({**VALID, "training": {"epochs": "many"}}, "training.epochs"),
        ({**VALID, "training": {"strategy": "horovod"}}, "training.strategy"),
        ({**VALID, "training": {"ps_mode": "async"}}, "applies to strategy parameter_server"),
        (
            {**VALID, "training": {"strategy": "parameter_server", "max_staleness": 3}},
            "max_staleness applies to ps_mode 'async'",
        ),
        (
            {
                **VALID,
                "training": {"strategy": "parameter_server"},
                "cluster": {"workers": 3, "parameter_servers": 0},
            },
            "needs cluster.parameter_servers >= 1",
        ),
        ({**VALID, "name": "../etc"}, "name"),
        ([VALID], None),
        ("not json", None),
    ],
)
async def test_bad_spec_is_a_422_naming_the_field_and_stores_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    internal_token: str,
    tenant_id: str,
    body: Any,
    field: str | None,
) -> None:
    headers = as_service(internal_token, tenant_id)
    kept = await seed_workflow(app, tenant_id)
    before = (await client.get(f"/workflows/{kept}", headers=headers)).json()

    content = body if isinstance(body, str) else json.dumps(body)
    response = await client.post(
        "/workflows", content=content, headers={**headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 422
    assert set(response.json()) == {"error", "detail"}
    if field is not None:
        assert field in json.dumps(response.json()["detail"])
    assert await count_workflows(app, tenant_id) == 1
    assert (await client.get(f"/workflows/{kept}", headers=headers)).json() == before


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}]
)
async def test_unauthenticated_submit_is_401_and_stores_nothing(
    app: FastAPI, client: httpx.AsyncClient, tenant_id: str, headers: dict[str, str]
) -> None:
    response = await client.post("/workflows", json=VALID, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert await count_workflows(app, tenant_id) == 0


async def test_get_list_and_tenant_isolation(
    app: FastAPI, client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    older = await seed_workflow(app, tenant_id)
    newer = await seed_workflow(app, tenant_id)

    got = await client.get(f"/workflows/{older}", headers=headers)
    assert got.status_code == 200
    body = got.json()
    assert set(body) == WORKFLOW_KEYS
    assert body["status"] == "running" and body["current_phase"] == 2
    assert [(p["phase"], p["name"], p["status"]) for p in body["phases"]] == [
        (1, "setup", "completed"),
        (2, "configure", "running"),
        (3, "train", "pending"),
        (4, "validate", "pending"),
        (5, "deploy", "pending"),
    ]
    assert set(body["phases"][0]) == {
        "phase",
        "name",
        "status",
        "started_at",
        "finished_at",
        "duration_s",
        "detail",
    }
    setup = body["phases"][0]
    took = datetime.fromisoformat(setup["finished_at"]) - datetime.fromisoformat(
        setup["started_at"]
    )
    assert setup["duration_s"] == round(took.total_seconds(), 3)
    assert body["phases"][1]["duration_s"] is None  # still running
    assert body["progress"] is None and body["result"] is None and body["error"] is None

    listed = await client.get("/workflows", params={"limit": 1}, headers=headers)
    assert [w["id"] for w in listed.json()] == [str(newer)]

    other = as_service(internal_token, "someone-else")
    assert (await client.get(f"/workflows/{older}", headers=other)).status_code == 404
    assert (await client.get(f"/workflows/{older}/bundle", headers=other)).status_code == 404
    assert (await client.get("/workflows", headers=other)).json() == []


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/workflows/not-a-uuid", "path.workflow_id"),
        ("/workflows/not-a-uuid/events", "path.workflow_id"),
        ("/workflows/not-a-uuid/bundle", "path.workflow_id"),
        ("/workflows?limit=0", "query.limit"),
    ],
)
async def test_bad_ids_and_queries_are_422(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str, path: str, field: str
) -> None:
    response = await client.get(path, headers=as_service(internal_token, tenant_id))
    assert response.status_code == 422
    assert field in json.dumps(response.json()["detail"])


async def test_unknown_workflow_is_404(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    for suffix in ("", "/events", "/bundle"):
        response = await client.get(f"/workflows/{uuid.uuid4()}{suffix}", headers=headers)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


async def _stored_workflow(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str, workflow_id: uuid.UUID
) -> dict[str, Any]:
    headers = as_service(internal_token, tenant_id)

    async def stored() -> dict[str, Any] | None:
        response = await client.get(f"/workflows/{workflow_id}", headers=headers)
        return response.json() if response.status_code == 200 else None

    found: dict[str, Any] = await wait_until(stored, timeout=20)
    return found


async def test_requested_event_with_a_bad_token_records_a_failed_workflow(
    app: FastAPI,
    client: httpx.AsyncClient,
    nc: Client,
    watch: Any,
    internal_token: str,
    tenant_id: str,
) -> None:
    failures = await watch("nexus.phase1.failed")
    request = WorkflowRequested(
        workflow_id=uuid.uuid4(), tenant_id=tenant_id, spec=VALID, auth_token="not-a-token"
    )
    # The same workflow asked for twice (a new event id) is still one workflow.
    duplicates = [request.event_id, uuid.uuid4()]
    await publish(nc, request)
    await publish(nc, request.model_copy(update={"event_id": duplicates[1]}))

    failed = await failures.wait_for(
        lambda e: e["workflow_id"] == str(request.workflow_id), timeout=20
    )
    assert failed["phase"] == 1 and failed["reason"].startswith("auth_token:")
    # The token proved no tenant, so the payload's is not trusted: the claimed tenant sees
    # nothing, and the record is kept apart, readable with the internal token.
    workflow = await _stored_workflow(client, internal_token, "unverified", request.workflow_id)
    assert workflow["status"] == "failed" and workflow["current_phase"] == 1
    assert workflow["error"].startswith("auth_token:")
    assert workflow["phases"][0]["status"] == "failed"
    await wait_until(lambda: handled(app, *duplicates), timeout=20)
    assert await count_workflows(app, "unverified") >= 1
    claimed = as_service(internal_token, tenant_id)
    assert (
        await client.get(f"/workflows/{request.workflow_id}", headers=claimed)
    ).status_code == 404
    assert await count_workflows(app, tenant_id) == 0


async def test_requested_event_with_a_bad_spec_records_why(
    client: httpx.AsyncClient, nc: Client, watch: Any, internal_token: str, tenant_id: str
) -> None:
    request = WorkflowRequested(
        workflow_id=uuid.uuid4(),
        tenant_id=tenant_id,
        spec={"name": "bad", "dataset": "imagenet"},
        auth_token=internal_token,
    )
    await publish(nc, request)
    workflow = await _stored_workflow(client, internal_token, tenant_id, request.workflow_id)
    assert workflow["status"] == "failed"
    assert "dataset" in workflow["error"] and "imagenet" in workflow["error"]


async def test_events_stream_sends_the_workflow_until_it_finishes(
    app: FastAPI, client: httpx.AsyncClient, nc: Client, internal_token: str, tenant_id: str
) -> None:
    from shared.contracts import PhaseFailed

    headers = as_service(internal_token, tenant_id)
    workflow_id = await seed_workflow(app, tenant_id)
    await publish(
        nc, PhaseFailed(workflow_id=workflow_id, tenant_id=tenant_id, phase=2, reason="no nodes")
    )

    async def failed() -> bool:
        response = await client.get(f"/workflows/{workflow_id}", headers=headers)
        return bool(response.json()["status"] == "failed")

    await wait_until(failed, timeout=20)
    response = await client.get(f"/workflows/{workflow_id}/events", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in response.text.split("\n\n") if f.strip()]
    assert len(frames) == 1
    event_line, data_line = frames[0].split("\n")
    assert event_line == "event: workflow"
    sent = json.loads(data_line.removeprefix("data: "))
    assert sent["status"] == "failed" and sent["error"] == "no nodes"
    assert sent["phases"][1]["status"] == "failed"
