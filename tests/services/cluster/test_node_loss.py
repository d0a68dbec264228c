"""A node that dies is noticed at once, a node that hangs after three missed heartbeats; both
are marked lost and announced on `nexus.node.lost`. Real node processes, a real SIGKILL and
SIGSTOP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from typing import Any

import httpx
import psutil
from fastapi import FastAPI

from tests.services.cluster.conftest import wait_until
from tests.support import as_service


async def _registered_cluster(
    client: httpx.AsyncClient, headers: dict[str, str], workers: int
) -> dict[str, Any]:
    layout = {"workers": workers, "parameter_servers": 0, "validators": 1}
    created = await client.post("/clusters", json=layout, headers=headers)
    assert created.status_code == 201
    cluster_id = created.json()["id"]

    async def registered() -> dict[str, Any] | None:
        body: dict[str, Any] = (await client.get(f"/clusters/{cluster_id}", headers=headers)).json()
        return body if body["status"] == "ready" else None

    found: dict[str, Any] = await wait_until(registered, timeout=60)
    return found


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def _two(found: Any) -> list[dict[str, Any]] | None:
    nodes: list[dict[str, Any]] = await found()
    return nodes if len(nodes) == 2 else None


def _metric(app: FastAPI, name: str, **labels: str) -> float:
    value = app.state.metrics_registry.get_sample_value(name, labels)
    return float(value or 0.0)


async def test_a_killed_node_is_lost_within_a_second_and_a_hung_one_after_three_beats(
    app: FastAPI,
    client: httpx.AsyncClient,
    internal_token: str,
    tenant_id: str,
    watch: Any,
) -> None:
    headers = as_service(internal_token, tenant_id)
    lost_events = await watch("nexus.node.lost")
    cluster = await _registered_cluster(client, headers, workers=2)
    killed, hung = [n for n in cluster["nodes"] if n["role"] == "worker"]
    interval = app.state.context.settings.heartbeat_interval_s
    joined = _metric(app, "nexus_nodes_joined_total", role="worker")
    assert joined >= 2

    try:
        await asyncio.sleep(2 * interval)  # both heartbeating
        os.kill(killed["pid"], signal.SIGKILL)
        sent = time.monotonic()
        event = await lost_events.wait_for(lambda e: e["node_id"] == killed["id"], timeout=10)
        killed_after = time.monotonic() - sent
        assert event["exit_code"] == -signal.SIGKILL and event["silent_s"] is None
        assert event["cluster_id"] == cluster["id"] and event["role"] == "worker"
        assert "exited" in event["reason"]

        os.kill(hung["pid"], signal.SIGSTOP)
        stopped = time.monotonic()
        event = await lost_events.wait_for(lambda e: e["node_id"] == hung["id"], timeout=15)
        hung_after = time.monotonic() - stopped
        assert event["exit_code"] is None and event["silent_s"] >= 3 * interval
        assert "missed 3 heartbeats" in event["reason"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(hung["pid"], signal.SIGCONT)

    # Generous bounds for a loaded test machine; bench/ measures the real figures.
    assert killed_after < 1.0 + 4 * interval
    # Its last beat came up to an interval before the SIGSTOP.
    assert 2 * interval <= hung_after < 3 * interval + 4.0
    body = (await client.get(f"/clusters/{cluster['id']}", headers=headers)).json()
    statuses = {n["id"]: n["status"] for n in body["nodes"]}
    assert statuses[killed["id"]] == statuses[hung["id"]] == "lost"

    # The hung node was fenced: killed, so it can never rejoin what went on without it.
    async def fenced() -> bool:
        return not _alive(hung["pid"])

    await wait_until(fenced, timeout=5)
    assert _metric(app, "nexus_nodes_lost_total", role="worker", cause="exited") >= 1
    assert _metric(app, "nexus_nodes_lost_total", role="worker", cause="silent") >= 1

    # The cluster keeps its size: a new process takes each lost one's place and registers.
    async def replaced() -> list[dict[str, Any]]:
        body = (await client.get(f"/clusters/{cluster['id']}", headers=headers)).json()
        first = {n["id"] for n in cluster["nodes"]}
        return [n for n in body["nodes"] if n["id"] not in first and n["status"] == "registered"]

    replacements = await wait_until(lambda: _two(replaced), timeout=60)
    assert sorted((n["role"], n["rank"]) for n in replacements) == sorted(
        (n["role"], n["rank"]) for n in (killed, hung)
    )
    assert _metric(app, "nexus_nodes_replaced_total", role="worker") >= 2
    await client.delete(f"/clusters/{cluster['id']}", headers=headers)
