"""The memory service's HTTP API against a real Postgres and NATS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.memory.app import create_app
from services.memory.settings import MemorySettings
from tests.support import as_service, running


@pytest.fixture(scope="module")  # tests are isolated by their own tenant
async def client(service_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(MemorySettings())) as client:  # type: ignore[call-arg]
        yield client


async def test_put_then_get_returns_value_and_bumps_version(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    first = await client.put(
        "/memory/wf-1/neural/config", json={"value": {"a": 1}}, headers=headers
    )
    second = await client.put(
        "/memory/wf-1/neural/config", json={"value": {"a": 2}}, headers=headers
    )
    assert first.status_code == 200 and first.json()["version"] == 1
    assert second.json()["version"] == 2

    got = await client.get("/memory/wf-1/neural/config", headers=headers)
    assert got.json()["value"] == {"a": 2}

    history = await client.get("/memory/wf-1/neural/config/history", headers=headers)
    assert [c["value"] for c in history.json()] == [{"a": 1}, {"a": 2}]


async def test_list_filters_by_prefix_and_search(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    for key, value in {"neural/a": "alpha", "neural/b": "beta", "other/c": "gamma"}.items():
        await client.put(f"/memory/ns/{key}", json={"value": value}, headers=headers)

    by_prefix = await client.get("/memory/ns", params={"prefix": "neural/"}, headers=headers)
    assert [e["key"] for e in by_prefix.json()["entries"]] == ["neural/a", "neural/b"]
    by_search = await client.get("/memory/ns", params={"q": "gam"}, headers=headers)
    assert [e["key"] for e in by_search.json()["entries"]] == ["other/c"]


async def test_tenants_do_not_see_each_other(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    await client.put(
        "/memory/ns/k", json={"value": 1}, headers=as_service(internal_token, tenant_id)
    )
    other = await client.get("/memory/ns/k", headers=as_service(internal_token, "someone-else"))
    assert other.status_code == 404
    assert other.json()["error"] == "not_found"


async def test_delete_keeps_history(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    await client.put("/memory/ns/k", json={"value": 1}, headers=headers)
    assert (await client.delete("/memory/ns/k", headers=headers)).status_code == 204
    assert (await client.get("/memory/ns/k", headers=headers)).status_code == 404
    history = await client.get("/memory/ns/k/history", headers=headers)
    assert [c["operation"] for c in history.json()] == ["put", "delete"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("put", "/memory/ns/neural/x", {}, 422, "value"),
        ("put", "/memory/ns/../etc", {"value": 1}, 405, None),  # the client folds the ..
        ("put", "/memory/ns/a//b", {"value": 1}, 422, "key"),
        ("put", "/memory/-bad/k", {"value": 1}, 422, "path.namespace"),
        ("put", "/memory/ns/k", "not json", 422, None),
        ("get", "/memory/ns?limit=0", None, 422, "query.limit"),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(
    client: httpx.AsyncClient,
    internal_token: str,
    tenant_id: str,
    method: str,
    path: str,
    body: object,
    status: int,
    field: str | None,
) -> None:
    headers = as_service(internal_token, tenant_id)
    await client.put("/memory/ns/keep", json={"value": "kept"}, headers=headers)
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    response = await client.request(method.upper(), path, headers=headers, **kwargs)
    assert response.status_code == status
    assert set(response.json()) == {"error", "detail"}
    if field is not None:
        assert field in str(response.json()["detail"])
    kept = await client.get("/memory/ns/keep", headers=headers)
    assert kept.json()["value"] == "kept" and kept.json()["version"] == 1


async def test_oversized_value_is_refused(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    big = "x" * (1024 * 1024 + 1)
    response = await client.put(
        "/memory/ns/big", json={"value": big}, headers=as_service(internal_token, tenant_id)
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}],
)
async def test_requests_without_valid_credentials_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/memory/ns/k", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_internal_token_must_name_a_tenant(
    client: httpx.AsyncClient, internal_token: str
) -> None:
    response = await client.get(
        "/memory/ns/k", headers={"Authorization": f"Bearer {internal_token}"}
    )
    assert response.status_code == 401
    assert "X-Nexus-Tenant" in response.json()["detail"]


async def test_health_readiness_and_metrics(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    await client.get("/memory/ns/some-key", headers=as_service(internal_token, tenant_id))
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "nats": "ok"}
    metrics = await client.get("/metrics")
    # Labelled by route template, so ids in paths do not multiply the series.
    assert 'route="/readyz",service="memory",status="200"' in metrics.text
    assert 'route="/memory/{namespace}/{key:path}",service="memory",status="404"' in metrics.text


async def test_readiness_is_503_naming_the_database_when_it_is_down(
    service_env: dict[str, str],
) -> None:
    from tests.infrastructure import free_port

    unreachable = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    settings = MemorySettings(database_url=unreachable)  # type: ignore[call-arg]
    async with running(create_app(settings)) as client:
        ready = await client.get("/readyz")
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready
    assert ready.status_code == 503
    body = ready.json()
    assert body["error"] == "not_ready"
    assert body["detail"]["database"].startswith("down")
    assert body["detail"]["nats"] == "ok"
