"""Phases 2 and 3 driven through real NATS JetStream: the trainer app and the memory service
run in-process, a worker node answers training tasks, and the test watches the events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest

from services.trainer.app import create_app
from services.trainer.settings import TrainerSettings
from shared.artifacts import ArtifactStore
from shared.contracts import ClusterStarted, Event, NodeInfo, NodeLost, Phase2Completed
from tests.services.trainer.conftest import digits_spec, node
from tests.services.trainer.worker_node import InProcessWorkerNode
from tests.support import as_service, memory_keys, running

# The topology the cluster service measures for a cluster that came up.
CONNECTED = {"connected": True, "backend": "gloo", "world_size": 3, "checks": []}
# Other consumers of the shared stream may be working through a backlog first.
EVENT_TIMEOUT_S = 90


@pytest.fixture(scope="module")
async def trainer(memory_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = TrainerSettings(memory_url=memory_url, node_task_accept_timeout_s=2)  # type: ignore[call-arg]
    async with running(create_app(settings)) as client:
        yield client


@pytest.fixture
async def watch(service_env: dict[str, str]) -> AsyncIterator[Any]:
    """Collect every `nexus.>` event from now on; `await watch(workflow_id, subject)`."""
    nc = await nats.connect(service_env["NEXUS_NATS_URL"])
    seen: list[tuple[str, dict[str, Any]]] = []

    async def collect(message: Any) -> None:
        seen.append((message.subject, json.loads(message.data)))

    await nc.subscribe("nexus.>", cb=collect)

    async def wait_for(workflow_id: uuid.UUID, *subjects: str) -> tuple[str, dict[str, Any]]:
        for _ in range(EVENT_TIMEOUT_S * 20):
            for subject, event in seen:
                if event.get("workflow_id") == str(workflow_id) and subject in subjects:
                    return subject, event
            await asyncio.sleep(0.05)
        raise TimeoutError(f"no {subjects} for workflow {workflow_id}")

    wait_for.seen = seen  # type: ignore[attr-defined]
    yield wait_for
    await nc.close()


async def publish(nats_url: str, event: Event) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(
            event.subject,
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": str(event.event_id)},
        )
    finally:
        await nc.close()


def cluster_nodes(worker: NodeInfo) -> list[NodeInfo]:
    prefix = worker.node_id.rsplit("-", 2)[0]
    return [
        worker,
        node("worker", 1, f"{prefix}-worker-1"),
        node("parameter_server", 0, f"{prefix}-parameter_server-0"),
        node("validator", 0, f"{prefix}-validator-0"),
    ]


async def test_nodes_ready_leads_to_a_trained_model_and_phase3_completed(
    trainer: httpx.AsyncClient,
    memory_url: str,
    watch: Any,
    service_env: dict[str, str],
    internal_token: str,
    tenant_id: str,
) -> None:
    store = ArtifactStore(f"file://{service_env['NEXUS_HOME']}/artifacts")
    workflow_id, cluster_id, worker = uuid.uuid4(), uuid.uuid4(), node()
    spec = digits_spec(epochs=40, patience=1, checkpoint_every=2)
    async with InProcessWorkerNode(service_env["NEXUS_NATS_URL"], worker, store.root_url):
        await publish(
            service_env["NEXUS_NATS_URL"],
            ClusterStarted(
                workflow_id=workflow_id,
                tenant_id=tenant_id,
                cluster_id=cluster_id,
                nodes=cluster_nodes(worker),
                topology=CONNECTED,
                spec=spec,
            ),
        )
        subject, phase2 = await watch(workflow_id, "nexus.phase2.completed", "nexus.phase2.failed")
        assert subject == "nexus.phase2.completed", phase2
        assert phase2["architecture"]["input_dim"] == 64
        subject, phase3 = await watch(workflow_id, "nexus.phase3.completed", "nexus.phase3.failed")
    assert subject == "nexus.phase3.completed", phase3
    assert phase3["cluster_id"] == str(cluster_id) and phase3["spec"]["dataset"] == "digits"
    metrics = phase3["metrics"]
    assert metrics["converged"] is True and metrics["val_accuracy"] > 0.8
    progress = [
        e
        for s, e in watch.seen
        if s == "nexus.training.progress" and e["workflow_id"] == str(workflow_id)
    ]
    assert [e["epoch"] for e in progress] == list(range(1, metrics["epochs_run"] + 1))

    headers = as_service(internal_token, tenant_id)
    job = (await trainer.get(f"/jobs/{phase3['job_id']}", headers=headers)).json()
    assert job["status"] == "succeeded" and job["node_id"] == worker.node_id
    assert job["model_uri"] == phase3["model_uri"] and job["checkpoints"]
    epochs = (await trainer.get(f"/jobs/{job['id']}/metrics", headers=headers)).json()["epochs"]
    assert len(epochs) == metrics["epochs_run"]

    wanted = {"neural/training-metrics", "neural/phase2-complete", "neural/phase3-complete"}
    memory = await memory_keys(memory_url, headers, workflow_id, wanted)
    assert memory["neural/training-job-id"] == job["id"]
    assert memory["neural/architecture"]["parameter_count"] > 0
    assert memory["neural/training-script"]["uri"].endswith("neural/scripts/train.py")
    assert len(memory["neural/training-metrics"]["history"]) == metrics["epochs_run"]
    assert memory["neural/monitoring"]["metrics_url"].endswith(f"/jobs/{job['id']}/metrics")
    assert memory["neural/monitoring"]["wall_seconds"] > 0
    assert {"neural/phase2-complete", "neural/phase3-complete"} <= set(memory)
    for path in (
        "neural/configs/architecture.json",
        "neural/scripts/train.py",
        "neural/scripts/backup-checkpoints.sh",
        "neural/models/model.safetensors",
        "neural/models/model-metadata.json",
    ):
        assert store.exists(store.workflow_url(tenant_id, workflow_id, path)), path


@pytest.mark.parametrize(
    ("nodes", "error", "reason"),
    [
        (3, None, "3 nodes ready; the gate requires 4"),
        (4, "topology not connected: n-1: refused", "topology not connected: n-1: refused"),
        (0, "only 2 of 4 nodes registered in time", "only 2 of 4 nodes registered in time"),
    ],
)
async def test_phase2_gate_failures_are_reported(
    trainer: httpx.AsyncClient,
    watch: Any,
    service_env: dict[str, str],
    tenant_id: str,
    nodes: int,
    error: str | None,
    reason: str,
) -> None:
    workflow_id = uuid.uuid4()
    await publish(
        service_env["NEXUS_NATS_URL"],
        ClusterStarted(
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            cluster_id=uuid.uuid4(),
            nodes=cluster_nodes(node())[:nodes],
            topology=None if error else CONNECTED,
            error=error,
            spec=digits_spec(),
        ),
    )
    subject, event = await watch(workflow_id, "nexus.phase2.completed", "nexus.phase2.failed")
    assert subject == "nexus.phase2.failed" and reason in event["reason"]


async def test_a_node_that_does_not_answer_fails_phase3(
    trainer: httpx.AsyncClient,
    watch: Any,
    service_env: dict[str, str],
    internal_token: str,
    tenant_id: str,
) -> None:
    workflow_id = uuid.uuid4()
    await publish(service_env["NEXUS_NATS_URL"], _phase2_completed(workflow_id, tenant_id, node()))
    subject, event = await watch(workflow_id, "nexus.phase3.completed", "nexus.phase3.failed")
    assert subject == "nexus.phase3.failed" and "could not start" in event["reason"]
    job = await _job_of(trainer, workflow_id, as_service(internal_token, tenant_id))
    assert job["status"] == "failed" and "did not answer" in job["error"]


async def test_a_run_that_does_not_converge_fails_the_phase3_gate(
    trainer: httpx.AsyncClient,
    watch: Any,
    service_env: dict[str, str],
    internal_token: str,
    tenant_id: str,
) -> None:
    workflow_id, worker = uuid.uuid4(), node()
    store_url = f"file://{service_env['NEXUS_HOME']}/artifacts"
    spec = digits_spec(epochs=2, patience=10)
    async with InProcessWorkerNode(service_env["NEXUS_NATS_URL"], worker, store_url):
        await publish(
            service_env["NEXUS_NATS_URL"], _phase2_completed(workflow_id, tenant_id, worker, spec)
        )
        subject, event = await watch(workflow_id, "nexus.phase3.completed", "nexus.phase3.failed")
    assert subject == "nexus.phase3.failed" and "did not converge" in event["reason"]
    job = await _job_of(trainer, workflow_id, as_service(internal_token, tenant_id))
    assert job["status"] == "failed" and job["metrics"]["epochs_run"] == 2


def _phase2_completed(
    workflow_id: uuid.UUID, tenant_id: str, worker: NodeInfo, spec: Any = None
) -> Phase2Completed:
    architecture = {
        "input_dim": 64,
        "num_classes": 10,
        "hidden_layers": [32],
        "activation": "relu",
        "dropout": 0.0,
    }
    return Phase2Completed(
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        cluster_id=uuid.uuid4(),
        nodes=cluster_nodes(worker),
        architecture=architecture,
        spec=spec or digits_spec(),
    )


async def _job_of(
    trainer: httpx.AsyncClient, workflow_id: uuid.UUID, headers: dict[str, str]
) -> dict[str, Any]:
    # The failure event is emitted in the same commit as the job's final state.
    listed = await trainer.get("/jobs", params={"workflow_id": str(workflow_id)}, headers=headers)
    (job,) = listed.json()["jobs"]
    return job  # type: ignore[no-any-return]


async def test_a_node_lost_with_no_restarts_left_fails_its_job_and_phase3_at_once(
    trainer: httpx.AsyncClient,
    watch: Any,
    service_env: dict[str, str],
    internal_token: str,
    tenant_id: str,
) -> None:
    workflow_id, worker = uuid.uuid4(), node()
    store_url = f"file://{service_env['NEXUS_HOME']}/artifacts"
    # Would train for minutes; a loss ends it, since it may not recover.
    spec = digits_spec(epochs=1000, patience=1000, max_restarts=0)
    phase2 = _phase2_completed(workflow_id, tenant_id, worker, spec)
    async with InProcessWorkerNode(service_env["NEXUS_NATS_URL"], worker, store_url):
        await publish(service_env["NEXUS_NATS_URL"], phase2)
        await watch(workflow_id, "nexus.training.progress")
        lost = NodeLost(
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            cluster_id=phase2.cluster_id,
            node_id=worker.node_id,
            role="worker",
            rank=0,
            reason="its process exited with code -9",
            exit_code=-9,
        )
        await publish(service_env["NEXUS_NATS_URL"], lost)
        subject, event = await watch(workflow_id, "nexus.phase3.completed", "nexus.phase3.failed")
    assert subject == "nexus.phase3.failed"
    assert event["reason"] == (
        f"node {worker.node_id} (worker rank 0) was lost during training: "
        "its process exited with code -9; no restarts left (training.max_restarts is 0)"
    )
    job = await _job_of(trainer, workflow_id, as_service(internal_token, tenant_id))
    assert job["status"] == "failed" and job["error"] == event["reason"]


async def test_a_lost_node_of_another_cluster_or_tenant_leaves_the_job_alone(
    trainer: httpx.AsyncClient,
    watch: Any,
    service_env: dict[str, str],
    internal_token: str,
    tenant_id: str,
) -> None:
    workflow_id, worker = uuid.uuid4(), node()
    store_url = f"file://{service_env['NEXUS_HOME']}/artifacts"
    spec = digits_spec(epochs=1000, patience=1000, max_restarts=0)
    phase2 = _phase2_completed(workflow_id, tenant_id, worker, spec)
    common = {"workflow_id": workflow_id, "node_id": worker.node_id, "role": "worker", "rank": 0}
    claims = [
        NodeLost(tenant_id="intruder", cluster_id=phase2.cluster_id, reason="forged", **common),
        NodeLost(tenant_id=tenant_id, cluster_id=uuid.uuid4(), reason="elsewhere", **common),
        # Handled after the two above (one consumer, in order): the job's real loss.
        NodeLost(tenant_id=tenant_id, cluster_id=phase2.cluster_id, reason="real", **common),
    ]
    async with InProcessWorkerNode(service_env["NEXUS_NATS_URL"], worker, store_url):
        await publish(service_env["NEXUS_NATS_URL"], phase2)
        await watch(workflow_id, "nexus.training.progress")
        for claim in claims:
            await publish(service_env["NEXUS_NATS_URL"], claim)
        subject, event = await watch(workflow_id, "nexus.phase3.completed", "nexus.phase3.failed")
    assert subject == "nexus.phase3.failed"
    assert event["reason"].startswith(f"node {worker.node_id} (worker rank 0) was lost during")
    assert "during training: real; no restarts left" in event["reason"]
    job = await _job_of(trainer, workflow_id, as_service(internal_token, tenant_id))
    assert job["error"] == event["reason"]
