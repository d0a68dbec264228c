"""Admission: a tenant's quotas refuse work with 429 naming the quota, and the host's capacity
queues clusters (visibly, with their place in line) and starts them in order as room frees.
Real node processes, counted by pid while 30 requests arrive at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import psutil
import pytest
from fastapi import FastAPI

from services.cluster.app import create_app
from services.cluster.service.admission import default_node_capacity
from services.cluster.settings import ClusterSettings
from tests.services.cluster.conftest import wait_until
from tests.support import as_service, running

CAPACITY = 6  # node processes on the host: three clusters of two
QUOTA_CLUSTERS = 5
LAYOUT = {"workers": 1, "parameter_servers": 0, "validators": 1}


@pytest.fixture(scope="module")
async def small_host(memory_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = ClusterSettings(  # type: ignore[call-arg]
        memory_url=memory_url,
        max_node_processes=CAPACITY,
        tenant_max_clusters=QUOTA_CLUSTERS,
        tenant_max_workflows=1,
    )
    app = create_app(settings)
    async with running(app) as client:
        yield app, client


def _node_processes(app: FastAPI) -> set[int]:
    """Node processes alive now, whatever the database says: this process's children, and
    those the node fork servers forked (which carry the server's command line)."""
    server = app.state.context.state.manager.launcher.pid
    processes = psutil.Process().children(recursive=True)
    return {
        process.pid
        for process in processes
        if process.pid != server and process.is_running() and "cluster.node" in _cmd(process)
    }


def _cmd(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


async def test_thirty_clusters_at_once_never_pass_the_capacity_and_the_quota_refuses_the_rest(
    small_host: tuple[FastAPI, httpx.AsyncClient], internal_token: str, tenant_id: str
) -> None:
    app, client = small_host
    headers = as_service(internal_token, tenant_id)
    peak = 0
    sampling = True
    # Nodes earlier tests in this process left on their way out are not this host's.
    earlier = _node_processes(app)

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, len(_node_processes(app) - earlier))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        answers = await asyncio.gather(
            *(client.post("/clusters", json=LAYOUT, headers=headers) for _ in range(30))
        )
        created = [a.json() for a in answers if a.status_code == 201]
        refused = [a.json() for a in answers if a.status_code == 429]
        assert len(created) == QUOTA_CLUSTERS and len(refused) == 30 - QUOTA_CLUSTERS
        assert refused[0]["error"] == "quota_exceeded"
        assert "quota 'clusters' exceeded: the tenant holds 5 clusters" in refused[0]["detail"]
        assert "NEXUS_TENANT_MAX_CLUSTERS" in refused[0]["detail"]

        queued = [c for c in created if c["status"] == "queued"]
        assert len(queued) == QUOTA_CLUSTERS - CAPACITY // 2
        listed = (await client.get("/clusters", headers=headers)).json()
        places = sorted(c["queue_position"] for c in listed if c["status"] == "queued")
        assert places == list(range(1, len(queued) + 1))

        async def ready(cluster_id: str) -> bool:
            body = (await client.get(f"/clusters/{cluster_id}", headers=headers)).json()
            return body["status"] == "ready"

        running_now = [c["id"] for c in created if c["status"] != "queued"]
        for cluster_id in running_now:
            await wait_until(lambda c=cluster_id: ready(c), timeout=60)
        # Stopping one running cluster lets the first in line start, and so on.
        for cluster_id in running_now:
            stopped = await client.delete(f"/clusters/{cluster_id}", headers=headers)
            assert stopped.status_code == 200
        for cluster in queued:
            await wait_until(lambda c=cluster["id"]: ready(c), timeout=60)
    finally:
        sampling = False
        await sampler
        await _stop_all(client, headers)
    assert 0 < peak <= CAPACITY


async def _clusters(client: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await client.get("/clusters", headers=headers)).json()
    return found


async def _stop_all(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """Stop what a test started, so the next one finds the host empty."""
    for cluster in await _clusters(client, headers):
        await client.delete(f"/clusters/{cluster['id']}", headers=headers)


async def test_a_workflow_beyond_the_tenant_quota_is_refused_and_nothing_is_stored(
    small_host: tuple[FastAPI, httpx.AsyncClient],
    internal_token: str,
    tenant_id: str,
) -> None:
    _, client = small_host
    headers = as_service(internal_token, tenant_id)
    spec = {"name": "quota-test", "dataset": "digits"}
    first = await client.post("/workflows", json=spec, headers=headers)
    assert first.status_code == 202, first.text
    second = await client.post("/workflows", json=spec, headers=headers)
    assert second.status_code == 429
    assert (
        "quota 'workflows' exceeded: the tenant holds 1 unfinished workflows"
        in (second.json()["detail"])
    )
    assert len((await client.get("/workflows", headers=headers)).json()) == 1
    await _stop_all(client, headers)


async def test_a_workflow_waits_queued_with_its_place_while_the_host_is_full(
    small_host: tuple[FastAPI, httpx.AsyncClient], internal_token: str, tenant_id: str
) -> None:
    _, client = small_host
    headers = as_service(internal_token, tenant_id)
    try:
        full = [await client.post("/clusters", json=LAYOUT, headers=headers) for _ in range(3)]
        assert [c.json()["status"] for c in full] == ["starting"] * 3
        posted = await client.post(
            "/workflows", json={"name": "queued", "dataset": "digits"}, headers=headers
        )
        workflow_id = posted.json()["id"]

        async def workflow(status: str) -> dict[str, Any] | None:
            body: dict[str, Any] = (
                await client.get(f"/workflows/{workflow_id}", headers=headers)
            ).json()
            return body if body["status"] == status else None

        queued = await wait_until(lambda: workflow("queued"), timeout=30)
        assert queued["queue_position"] == 1 and queued["current_phase"] == 2
        # Two of the three clusters stop: the four nodes fit, and the workflow goes on.
        for answer in full[:2]:
            await client.delete(f"/clusters/{answer.json()['id']}", headers=headers)
        resumed = await wait_until(lambda: workflow("running"), timeout=30)
        assert resumed["queue_position"] is None
        assert resumed["phases"][1]["detail"]["queued_s"] > 0
    finally:
        await _stop_all(client, headers)


async def test_a_cluster_larger_than_the_host_is_refused_with_a_reason(
    small_host: tuple[FastAPI, httpx.AsyncClient], internal_token: str, tenant_id: str
) -> None:
    _, client = small_host
    headers = as_service(internal_token, tenant_id)
    answer = await client.post("/clusters", json=LAYOUT | {"workers": 6}, headers=headers)
    assert answer.status_code == 422
    assert "needs 7 node processes; this host runs at most 6" in answer.json()["detail"]
    assert await _clusters(client, headers) == []


def test_the_default_capacity_is_what_the_machine_holds() -> None:
    capacity = default_node_capacity()
    assert 4 <= capacity <= (psutil.cpu_count() or 1) * 8
    assert capacity * 400 * 2**20 <= psutil.virtual_memory().total
