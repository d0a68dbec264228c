"""Standalone clusters: POST /clusters starts real node processes, GET shows them, DELETE
stops them; bad input is refused before anything starts."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psutil
import pytest

from services.cluster.app import create_app
from services.cluster.settings import ClusterSettings
from tests.services.cluster.conftest import wait_until
from tests.support import as_service, running


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": 17}, "workers"),
        ({"parameter_servers": "many"}, "parameter_servers"),
        ({"validators": 1, "gpus": 2}, "gpus"),
        ("not json", None),
    ],
)
async def test_bad_cluster_request_is_a_422_and_starts_nothing(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str, body: Any, field: str | None
) -> None:
    headers = as_service(internal_token, tenant_id)
    content = body if isinstance(body, str) else json.dumps(body)
    response = await client.post(
        "/clusters", content=content, headers={**headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert set(response.json()) == {"error", "detail"}
    if field is not None:
        assert field in json.dumps(response.json()["detail"])
    assert (await client.get("/clusters", headers=headers)).json() == []


async def test_cluster_routes_need_credentials(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("POST", "/clusters"),
        ("GET", "/clusters"),
        ("DELETE", f"/clusters/{uuid.uuid4()}"),
    ]:
        assert (await client.request(method, path, json={})).status_code == 401


async def test_standalone_cluster_starts_lists_and_stops(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    layout = {"workers": 1, "parameter_servers": 1, "validators": 1}

    created = await client.post("/clusters", json=layout, headers=headers)

    assert created.status_code == 201
    cluster = created.json()
    cluster_id = cluster["id"]
    assert cluster["workflow_id"] is None and cluster["layout"] == layout
    prefix = uuid.UUID(cluster_id).hex[:8]
    assert sorted(n["id"] for n in cluster["nodes"]) == [
        f"{prefix}-parameter-server-0",
        f"{prefix}-validator-0",
        f"{prefix}-worker-0",
    ]
    pids = [n["pid"] for n in cluster["nodes"]]
    assert all(pid and psutil.pid_exists(pid) for pid in pids)

    async def registered() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/clusters/{cluster_id}", headers=headers)).json()
        return body if all(n["status"] == "registered" for n in body["nodes"]) else None

    await wait_until(registered, timeout=60)

    async def heartbeats_recorded() -> bool:
        # Registration stamps a first heartbeat; later ones come from the heartbeat stream.
        body = (await client.get(f"/clusters/{cluster_id}", headers=headers)).json()
        return all(n["last_heartbeat_at"] > n["registered_at"] for n in body["nodes"])

    await wait_until(heartbeats_recorded, timeout=15)
    listed = (await client.get("/clusters", headers=headers)).json()
    assert [c["id"] for c in listed] == [cluster_id]

    other = as_service(internal_token, "someone-else")
    assert (await client.get(f"/clusters/{cluster_id}", headers=other)).status_code == 404
    assert (await client.delete(f"/clusters/{cluster_id}", headers=other)).status_code == 404
    assert all(psutil.pid_exists(pid) for pid in pids)

    deleted = await client.delete(f"/clusters/{cluster_id}", headers=headers)

    assert deleted.status_code == 200
    assert deleted.json()["status"] == "stopped"
    assert all(n["status"] == "stopped" for n in deleted.json()["nodes"])
    assert not any(psutil.pid_exists(pid) for pid in pids)


@pytest.mark.parametrize(
    ("path", "field"),
    [("/clusters/not-a-uuid", "path.cluster_id"), ("/clusters?limit=9999", "query.limit")],
)
async def test_bad_cluster_ids_and_queries_are_422(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str, path: str, field: str
) -> None:
    response = await client.get(path, headers=as_service(internal_token, tenant_id))
    assert response.status_code == 422
    assert field in json.dumps(response.json()["detail"])


async def test_service_shutdown_stops_the_nodes_it_started(
    client: httpx.AsyncClient, memory_url: str, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    layout = {"workers": 1, "parameter_servers": 1, "validators": 1}
    second = create_app(ClusterSettings(memory_url=memory_url))  # type: ignore[call-arg]
    async with running(second) as other_instance:
        created = (await other_instance.post("/clusters", json=layout, headers=headers)).json()
        pids = [n["pid"] for n in created["nodes"]]
        assert all(psutil.pid_exists(pid) for pid in pids)

    assert not any(psutil.pid_exists(pid) for pid in pids)
    cluster = (await client.get(f"/clusters/{created['id']}", headers=headers)).json()
    assert cluster["status"] == "failed" and "stopped" in cluster["error"]
    assert all(n["status"] == "stopped" for n in cluster["nodes"])
