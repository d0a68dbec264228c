"""The deployer's HTTP API: registry and deployments, tenant scoping, and bad input."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import httpx
import pytest

from tests.services.deployer.conftest import DeployerHarness

pytestmark = pytest.mark.usefixtures("stop_tenant_deployments")


async def test_deploy_list_show_and_stop_a_registered_model(
    harness: DeployerHarness, tenant_id: str, digits_model_dir: Path
) -> None:
    client, headers = harness.client, harness.headers(tenant_id)
    model = await harness.register(tenant_id, digits_model_dir, "api-model")

    listed = await client.get("/models", headers=headers)
    assert [m["id"] for m in listed.json()] == [str(model.id)]
    shown = await client.get(f"/models/{model.id}", headers=headers)
    assert shown.json()["name"] == "api-model" and shown.json()["version"] == 1

    created = await client.post("/deployments", json={"model_id": str(model.id)}, headers=headers)
    assert created.status_code == 201, created.text
    deployment = created.json()
    assert deployment["status"] == "running" and deployment["checks"]["predict"]["rows"] == 270

    got = await client.get(f"/deployments/{deployment['id']}", headers=headers)
    assert got.json()["url"] == deployment["url"]
    running = await client.get("/deployments", params={"status": "running"}, headers=headers)
    assert [d["id"] for d in running.json()] == [deployment["id"]]

    no_previous = await client.post(f"/deployments/{deployment['id']}/rollback", headers=headers)
    assert no_previous.status_code == 409
    assert "no earlier deployment" in no_previous.json()["detail"]

    stopped = await client.delete(f"/deployments/{deployment['id']}", headers=headers)
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    again = await client.delete(f"/deployments/{deployment['id']}", headers=headers)
    assert again.status_code == 409
    stopped_rollback = await client.post(
        f"/deployments/{deployment['id']}/rollback", headers=headers
    )
    assert stopped_rollback.status_code == 409
    assert "only a running one" in stopped_rollback.json()["detail"]


async def test_a_deployment_that_fails_is_a_502_and_recorded_as_failed(
    harness: DeployerHarness, tenant_id: str, tmp_path: Path
) -> None:
    client, headers = harness.client, harness.headers(tenant_id)
    model = await harness.register(tenant_id, tmp_path / "deleted-model", "gone")
    response = await client.post("/deployments", json={"model_id": str(model.id)}, headers=headers)
    assert response.status_code == 502
    body = response.json()
    assert body["error"] == "deployment_failed" and "no model files" in body["detail"]["reason"]
    recorded = await client.get(f"/deployments/{body['detail']['deployment_id']}", headers=headers)
    assert recorded.json()["status"] == "failed" and recorded.json()["pid"] is None


async def test_a_port_in_use_is_a_409_and_stores_nothing(
    harness: DeployerHarness, tenant_id: str, digits_model_dir: Path
) -> None:
    client, headers = harness.client, harness.headers(tenant_id)
    model = await harness.register(tenant_id, digits_model_dir, "busy-port")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        response = await client.post(
            "/deployments", json={"model_id": str(model.id), "port": port}, headers=headers
        )
    assert response.status_code == 409
    assert response.json()["detail"][0]["field"] == "port"
    assert (await client.get("/deployments", headers=headers)).json() == []


async def test_other_tenants_see_nothing(
    harness: DeployerHarness, tenant_id: str, digits_model_dir: Path
) -> None:
    model = await harness.register(tenant_id, digits_model_dir, "private")
    other = harness.headers(f"{tenant_id}-other")
    assert (await harness.client.get(f"/models/{model.id}", headers=other)).status_code == 404
    assert (await harness.client.get("/models", headers=other)).json() == []
    response = await harness.client.post(
        "/deployments", json={"model_id": str(model.id)}, headers=other
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("post", "/deployments", {}, 422, "model_id"),
        ("post", "/deployments", {"model_id": "not-a-uuid"}, 422, "model_id"),
        ("post", "/deployments", {"model_id": "{model}", "port": 80}, 422, "port"),
        ("post", "/deployments", {"model_id": "{model}", "port": "high"}, 422, "port"),
        ("post", "/deployments", {"model_id": "{model}", "replicas": 3}, 422, "replicas"),
        ("post", "/deployments", "not json", 422, None),
        ("post", "/deployments", {"model_id": str(uuid.UUID(int=1))}, 404, None),
        ("get", "/models/not-a-uuid", None, 422, "path.model_id"),
        ("get", f"/models/{uuid.UUID(int=1)}", None, 404, None),
        ("get", "/models?limit=0", None, 422, "query.limit"),
        ("get", "/deployments?status=exploded", None, 422, "query.status"),
        ("get", "/deployments?model_id=nope", None, 422, "query.model_id"),
        ("get", f"/deployments/{uuid.UUID(int=1)}", None, 404, None),
        ("post", f"/deployments/{uuid.UUID(int=1)}/rollback", None, 404, None),
        ("post", "/deployments/xyz/rollback", None, 422, "path.deployment_id"),
        ("delete", f"/deployments/{uuid.UUID(int=1)}", None, 404, None),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(
    harness: DeployerHarness,
    tenant_id: str,
    digits_model_dir: Path,
    method: str,
    path: str,
    body: object,
    status: int,
    field: str | None,
) -> None:
    headers = harness.headers(tenant_id)
    model = await harness.register(tenant_id, digits_model_dir, "kept")
    if isinstance(body, dict):
        body = {k: str(model.id) if v == "{model}" else v for k, v in body.items()}
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    if body is None:
        kwargs = {}
    response = await harness.client.request(method.upper(), path, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail"}
    if field is not None:
        assert field in str(response.json()["detail"])
    models = (await harness.client.get("/models", headers=headers)).json()
    assert [m["id"] for m in models] == [str(model.id)]
    assert (await harness.client.get("/deployments", headers=headers)).json() == []


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}]
)
async def test_requests_without_valid_credentials_are_401(
    harness: DeployerHarness, headers: dict[str, str]
) -> None:
    response = await harness.client.get("/deployments", headers=headers)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"


async def test_health_readiness_and_metrics(harness: DeployerHarness) -> None:
    assert (await harness.client.get("/healthz")).json()["status"] == "ok"
    ready = await harness.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "nats": "ok"}
    assert "nexus_http_requests_total" in (await harness.client.get("/metrics")).text


async def test_a_deployment_beyond_the_tenant_quota_is_429_and_a_new_version_still_rolls_out(
    harness: DeployerHarness,
    tenant_id: str,
    digits_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(harness.context.settings, "tenant_max_deployments", 1)
    client, headers = harness.client, harness.headers(tenant_id)

    async def deploy(name: str) -> httpx.Response:
        model = await harness.register(tenant_id, digits_model_dir, name)
        return await client.post("/deployments", json={"model_id": str(model.id)}, headers=headers)

    assert (await deploy("quota-a")).status_code == 201
    refused = await deploy("quota-b")
    assert refused.status_code == 429
    assert refused.json()["error"] == "quota_exceeded"
    assert (
        "quota 'deployments' exceeded: the tenant serves 1 deployments"
        in (refused.json()["detail"])
    )
    # Nothing was started or stored for the refused one.
    listed = (await client.get("/deployments", headers=headers)).json()
    assert [d["status"] for d in listed] == ["running"]
    # A new version of the served name replaces it: no more room is needed.
    assert (await deploy("quota-a")).status_code == 201


async def test_a_deployment_beyond_the_host_capacity_is_429_naming_it(
    harness: DeployerHarness,
    tenant_id: str,
    digits_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    held = harness.deployer.processes.servers_held()
    monkeypatch.setattr(harness.context.settings, "max_model_servers", held + 1)
    client, headers = harness.client, harness.headers(tenant_id)
    first = await harness.register(tenant_id, digits_model_dir, "host-a")
    second = await harness.register(tenant_id, digits_model_dir, "host-b")
    served = await client.post("/deployments", json={"model_id": str(first.id)}, headers=headers)
    assert served.status_code == 201
    refused = await client.post("/deployments", json={"model_id": str(second.id)}, headers=headers)
    assert refused.status_code == 429
    assert f"this host serves {held + 1} models" in refused.json()["detail"]
    assert "NEXUS_MAX_MODEL_SERVERS" in refused.json()["detail"]
