"""The node process on its own: it registers over JetStream, heartbeats, answers tasks,
refuses what it cannot run, stops on SIGTERM, outlives a dead service for a grace in
which a restarted one may adopt it, and leaves when none does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psutil
import pytest
from nats.aio.client import Client
from opentelemetry import propagate

from services.cluster.node.task_context import NodeTaskContext
from services.cluster.process_manager import PROJECT_ROOT
from services.cluster.process_manager import node_command as start_node
from shared.contracts import Event, NodeInfo, TrainingFinished

TENANT = "t-node-test"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def node_command(cluster_id: uuid.UUID, node_id: str) -> list[str]:
    return start_node(cluster_id, node_id, "worker", 0, tenant_id=TENANT, workflow_id=cluster_id)


@pytest.fixture
def node_env(service_env: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **service_env, "PYTHONUNBUFFERED": "1"}


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_gone(pid: int, timeout: float) -> None:
    for _ in range(int(timeout / 0.1)):
        if gone(pid):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"process {pid} still running after {timeout} s")


@pytest.fixture
async def node(
    node_env: dict[str, str], watch: Any, nc: Client
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, dict[str, Any]]]:
    """One node process, registered; yields (process, node id, its registration event)."""
    cluster_id = uuid.uuid4()
    node_id = f"{cluster_id.hex[:8]}-worker-0"
    registrations = await watch("nexus.node.registered")
    process = subprocess.Popen(node_command(cluster_id, node_id), cwd=PROJECT_ROOT, env=node_env)
    try:
        registered = await registrations.wait_for(
            lambda e: e["node"]["node_id"] == node_id, timeout=30
        )
        yield process, node_id, registered
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def ask(nc: Client, node_id: str, body: bytes | dict[str, Any]) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await nc.request(f"nodes.{node_id}.task", data, timeout=10)
    answer: dict[str, Any] = json.loads(reply.data)
    return answer


async def test_node_registers_heartbeats_answers_and_stops_on_sigterm(
    node: tuple[subprocess.Popen[bytes], str, dict[str, Any]], nc: Client
) -> None:
    process, node_id, registered = node
    assert registered["node"]["pid"] == process.pid
    assert registered["node"]["role"] == "worker"

    heartbeats = await nc.subscribe(f"nodes.{registered['cluster_id']}.{node_id}.heartbeat")
    beat = json.loads((await heartbeats.next_msg(timeout=5)).data)
    await heartbeats.unsubscribe()
    assert beat["node_id"] == node_id and beat["pid"] == process.pid and beat["busy"] is None

    ping = await ask(nc, node_id, {"task_id": "t1", "kind": "ping"})
    assert ping["accepted"] is True and ping["node"]["node_id"] == node_id

    unknown = await ask(nc, node_id, {"task_id": "t2", "kind": "mine-bitcoin"})
    assert unknown["accepted"] is False and "mine-bitcoin" in unknown["error"]
    garbage = await ask(nc, node_id, b"not json")
    assert garbage["accepted"] is False and "bad task request" in garbage["error"]
    no_kind = await ask(nc, node_id, {"task_id": "t3"})
    assert no_kind["accepted"] is False and "kind" in no_kind["error"]
    bad_connect = await ask(
        nc,
        node_id,
        {
            "task_id": "t4",
            "kind": "connect",
            "payload": {"master_addr": "127.0.0.1", "master_port": 1, "world_size": 2, "rank": 2},
        },
    )
    assert bad_connect["accepted"] is False and "rank" in bad_connect["error"]
    nothing_to_cancel = await ask(nc, node_id, {"task_id": "t5", "kind": "cancel"})
    assert nothing_to_cancel["accepted"] is False

    process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(process.wait, 10) == 0


@contextlib.asynccontextmanager
async def orphan_node(
    node_env: dict[str, str], watch: Any, grace_s: float
) -> AsyncIterator[tuple[int, str]]:
    """A node whose stand-in service started it and was then killed without cleaning up:
    yields (node pid, node id) once the service is dead."""
    cluster_id = uuid.uuid4()
    node_id = f"{cluster_id.hex[:8]}-worker-0"
    registrations = await watch("nexus.node.registered")
    parent_code = (
        "import subprocess, sys, time\n"
        f"child = subprocess.Popen({node_command(cluster_id, node_id)!r})\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**node_env, "NEXUS_NODE_ORPHAN_GRACE_S": str(grace_s)}
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE
    )
    node_pid = None
    try:
        assert parent.stdout is not None
        node_pid = int(await asyncio.to_thread(parent.stdout.readline))
        await registrations.wait_for(lambda e: e["node"]["node_id"] == node_id, timeout=30)
        parent.kill()
        parent.wait()
        yield node_pid, node_id
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if node_pid is not None and not gone(node_pid):
            os.kill(node_pid, signal.SIGKILL)


async def test_a_node_no_service_adopts_leaves_after_its_grace(
    node_env: dict[str, str], watch: Any
) -> None:
    async with orphan_node(node_env, watch, grace_s=1.0) as (node_pid, _):
        await asyncio.sleep(0.5)
        assert not gone(node_pid), "it left before its grace"
        await wait_gone(node_pid, timeout=10)


async def test_a_node_whose_service_died_follows_the_one_that_adopts_it(
    node_env: dict[str, str], watch: Any, nc: Client
) -> None:
    async with orphan_node(node_env, watch, grace_s=1.0) as (node_pid, node_id):
        subject = f"nodes.{node_id}.adopt"
        refused = json.loads((await nc.request(subject, b"{}", timeout=10)).data)
        assert refused["adopted"] is False and "owner_pid" in refused["error"]
        # This test process stands in for the restarted service.
        reply = await nc.request(subject, json.dumps({"owner_pid": os.getpid()}).encode(), 10)
        assert json.loads(reply.data) == {"adopted": True, "pid": node_pid, "busy": None}
        await asyncio.sleep(2.5)  # well past the grace: it stays with its new owner
        assert not gone(node_pid)
        assert (await ask(nc, node_id, {"task_id": "p", "kind": "ping", "payload": {}}))["accepted"]


async def test_task_context_publishes_from_a_thread_with_the_callers_trace() -> None:
    published: list[tuple[Event, dict[str, str]]] = []

    async def capture(event: Event, headers: dict[str, str]) -> None:
        published.append((event, headers))

    context = NodeTaskContext(
        node=NodeInfo(node_id="n-worker-0", role="worker", rank=0, pid=os.getpid(), host="h"),
        cluster_id="c",
        artifacts_url="file:///tmp",
        task_id="t",
        loop=asyncio.get_running_loop(),
        publish_async=capture,
        trace_context=propagate.extract({"traceparent": TRACEPARENT}),
    )
    event = TrainingFinished(
        workflow_id=uuid.uuid4(), tenant_id="t", job_id=uuid.uuid4(), node_id="n", succeeded=True
    )
    # The handler's thread blocks on publish while the node's loop does the sending.
    worker = threading.Thread(target=context.publish, args=(event,))
    worker.start()
    await asyncio.to_thread(worker.join, 10)

    [(sent, headers)] = published
    assert sent is event
    assert headers["Nats-Msg-Id"] == str(event.event_id)
    assert headers["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]


async def test_a_task_past_its_deadline_is_stopped_by_the_node_itself(
    node: tuple[subprocess.Popen[bytes], str, dict[str, Any]],
    nc: Client,
    watch: Any,
    tmp_path: Any,
) -> None:
    from shared.artifacts import ArtifactStore
    from tests.services.trainer.conftest import digits_spec, train_payload

    _, node_id, _ = node
    finished = await watch("nexus.training.finished")
    payload = train_payload(
        ArtifactStore(f"file://{tmp_path}"), digits_spec(epochs=1000, patience=1000)
    )
    request = {"task_id": "t-deadline", "kind": "train", "payload": payload, "deadline_s": 2}
    assert (await ask(nc, node_id, request))["accepted"]

    # No service is there to stop it: the node does, and says why.
    report = await finished.wait_for(lambda e: e["node_id"] == node_id, timeout=60)
    assert report["succeeded"] is False
    assert report["error"] == "the task ran past its deadline of 2 s on the node"
    assert report["result"]["cancelled"] is True and report["result"]["history"]
