"""The trainer's HTTP API against a real Postgres and NATS."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI

from services.trainer.app import create_app
from services.trainer.repository import TrainerRepository
from services.trainer.settings import TrainerSettings
from tests.services.trainer.conftest import digits_spec
from tests.support import as_service, running


@pytest.fixture
async def app(service_env: dict[str, str]) -> AsyncIterator[FastAPI]:
    application = create_app(TrainerSettings(node_task_accept_timeout_s=1))  # type: ignore[call-arg]
    async with running(application) as client:
        application.state.test_client = client
        yield application


@pytest.fixture
def client(app: FastAPI) -> httpx.AsyncClient:
    return app.state.test_client  # type: ignore[no-any-return]


async def make_job(
    app: FastAPI, tenant_id: str, status: str = "running", epochs: int = 0, node_id: str = ""
) -> uuid.UUID:
    """A job row as phase 3 leaves it, written through the service's own repository."""
    context = app.state.context
    async with context.unit_of_work() as uow:
        repository = TrainerRepository(uow.session, tenant_id)
        job = await repository.create_job(
            uuid.uuid4(),
            uuid.uuid4(),
            uuid.uuid4(),
            node_id or f"absent-{uuid.uuid4().hex[:8]}",
            config={"spec": digits_spec().model_dump(mode="json")},
        )
        metrics = [
            {"epoch": e, "epochs": epochs, "train_loss": 1.0 / e, "val_accuracy": 0.5 + e / 100}
            for e in range(epochs, 0, -1)  # stored out of order; read back in order
        ]
        await repository.record_epochs(job.id, metrics)
        if status in ("succeeded", "failed", "cancelled"):
            await repository.finish_job(job, status)
        elif status == "running":
            await repository.mark_started(job.id)
        return job.id


async def test_jobs_are_listed_for_their_tenant_only(
    app: FastAPI, client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    mine = [await make_job(app, tenant_id), await make_job(app, tenant_id, "succeeded")]
    await make_job(app, f"{tenant_id}-other")
    listed = await client.get("/jobs", headers=as_service(internal_token, tenant_id))
    assert listed.status_code == 200
    assert [j["id"] for j in listed.json()["jobs"]] == [str(j) for j in reversed(mine)]

    running_only = await client.get(
        "/jobs", params={"status": "running"}, headers=as_service(internal_token, tenant_id)
    )
    assert [j["id"] for j in running_only.json()["jobs"]] == [str(mine[0])]


async def test_job_and_its_metrics(
    app: FastAPI, client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    job_id = await make_job(app, tenant_id, epochs=3)
    headers = as_service(internal_token, tenant_id)
    job = (await client.get(f"/jobs/{job_id}", headers=headers)).json()
    assert job["status"] == "running" and job["started_at"] is not None
    assert job["config"]["spec"]["dataset"] == "digits"

    metrics = await client.get(f"/jobs/{job_id}/metrics", headers=headers)
    assert metrics.status_code == 200
    assert [e["epoch"] for e in metrics.json()["epochs"]] == [1, 2, 3]
    assert metrics.json()["epochs"][0]["metrics"]["train_loss"] == 1.0


async def test_cancel_marks_the_job_cancelled_and_fails_phase_3(
    app: FastAPI, client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    job_id = await make_job(app, tenant_id)
    nc = await nats.connect(app.state.context.settings.nats_url)
    failed = await nc.subscribe("nexus.phase3.failed")
    try:
        response = await client.post(
            f"/jobs/{job_id}/cancel", headers=as_service(internal_token, tenant_id)
        )
        assert response.status_code == 200
        body = response.json()
        # No node answers on this job's subject, so it is cancelled without one.
        assert body["job"]["status"] == "cancelled" and body["node_notified"] is False
        assert "did not answer" in body["detail"]
        event = await _next_for_tenant(failed, tenant_id)
        assert event["details"]["job_id"] == str(job_id)
    finally:
        await nc.close()


async def test_cancel_reaches_the_node_that_runs_the_job(
    app: FastAPI, client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    node_id = f"node-{uuid.uuid4().hex[:8]}"
    job_id = await make_job(app, tenant_id, node_id=node_id)
    nc = await nats.connect(app.state.context.settings.nats_url)
    received: list[dict[str, Any]] = []

    async def node(msg: Any) -> None:
        received.append(json.loads(msg.data))
        await msg.respond(json.dumps({"accepted": True}).encode())

    await nc.subscribe(f"nodes.{node_id}.task", cb=node)
    try:
        response = await client.post(
            f"/jobs/{job_id}/cancel", headers=as_service(internal_token, tenant_id)
        )
    finally:
        await nc.close()
    assert response.status_code == 200 and response.json()["node_notified"] is True
    task = {"task_id": str(job_id), "kind": "cancel", "payload": {"task_id": str(job_id)}}
    assert received == [task]


async def test_datasets_lists_the_bundled_ones(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    response = await client.get("/datasets", headers=as_service(internal_token, tenant_id))
    assert response.status_code == 200
    datasets = {d["name"]: d for d in response.json()["datasets"]}
    assert set(datasets) == {"breast_cancer", "digits", "iris", "wine", "diabetes"}
    assert datasets["digits"] == {
        "name": "digits",
        "task": "classification",
        "samples": 1797,
        "features": 64,
        "classes": 10,
        "class_names": [str(d) for d in range(10)],
    }
    assert datasets["diabetes"] == {
        "name": "diabetes",
        "task": "regression",
        "samples": 442,
        "features": 10,
        "classes": 0,
        "class_names": [],
    }


# Fixed, so every test worker collects the same test ids; no job has it.
UNKNOWN_JOB = uuid.UUID("00000000-0000-4000-8000-00000000dead")


@pytest.mark.parametrize(
    ("method", "path", "status", "field"),
    [
        ("get", "/jobs/not-a-uuid", 422, "path.job_id"),
        ("get", "/jobs/not-a-uuid/metrics", 422, "path.job_id"),
        ("post", "/jobs/not-a-uuid/cancel", 422, "path.job_id"),
        ("get", "/jobs?limit=0", 422, "query.limit"),
        ("get", "/jobs?status=exploded", 422, "query.status"),
        ("get", "/jobs?workflow_id=7", 422, "query.workflow_id"),
        ("get", f"/jobs/{UNKNOWN_JOB}", 404, None),
        ("get", f"/jobs/{UNKNOWN_JOB}/metrics", 404, None),
        ("post", f"/jobs/{UNKNOWN_JOB}/cancel", 404, None),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    internal_token: str,
    tenant_id: str,
    method: str,
    path: str,
    status: int,
    field: str | None,
) -> None:
    headers = as_service(internal_token, tenant_id)
    kept = await make_job(app, tenant_id, epochs=2)
    before = (await client.get(f"/jobs/{kept}", headers=headers)).json()
    response = await client.request(method.upper(), path, headers=headers)
    assert response.status_code == status
    assert set(response.json()) == {"error", "detail"}
    if field is not None:
        assert field in str(response.json()["detail"])
    assert (await client.get(f"/jobs/{kept}", headers=headers)).json() == before


async def test_another_tenants_job_is_not_found(
    app: FastAPI, client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    job_id = await make_job(app, tenant_id)
    stranger = as_service(internal_token, f"{tenant_id}-stranger")
    for method, path in [
        ("GET", f"/jobs/{job_id}"),
        ("GET", f"/jobs/{job_id}/metrics"),
        ("POST", f"/jobs/{job_id}/cancel"),
    ]:
        response = await client.request(method, path, headers=stranger)
        assert response.status_code == 404 and response.json()["error"] == "not_found"
    owner = await client.get(f"/jobs/{job_id}", headers=as_service(internal_token, tenant_id))
    assert owner.json()["status"] == "running"


@pytest.mark.parametrize("status", ["succeeded", "failed", "cancelled"])
async def test_cancelling_a_finished_job_is_a_conflict(
    app: FastAPI, client: httpx.AsyncClient, internal_token: str, tenant_id: str, status: str
) -> None:
    job_id = await make_job(app, tenant_id, status)
    headers = as_service(internal_token, tenant_id)
    response = await client.post(f"/jobs/{job_id}/cancel", headers=headers)
    assert response.status_code == 409 and response.json()["error"] == "conflict"
    assert status in response.json()["detail"]
    assert (await client.get(f"/jobs/{job_id}", headers=headers)).json()["status"] == status


async def test_requests_without_credentials_are_401(client: httpx.AsyncClient) -> None:
    for path in ("/jobs", "/datasets", f"/jobs/{uuid.uuid4()}"):
        response = await client.get(path)
        assert response.status_code == 401 and response.json()["error"] == "unauthorized"


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["service"] == "trainer"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "nats": "ok"}


async def _next_for_tenant(subscription: Any, tenant_id: str) -> dict[str, Any]:
    while True:
        message = await subscription.next_msg(timeout=10)
        event: dict[str, Any] = json.loads(message.data)
        if event["tenant_id"] == tenant_id:
            return event
