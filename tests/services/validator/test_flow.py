"""Phase 4 end to end through real NATS, Postgres and the memory service: a
`phase3.completed` event in, a validator node measuring the model, gates, report, memory keys
and `phase4.passed` / `phase4.failed` out."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest

from services.validator.handlers import START as PHASE3_CONSUMER
from shared.artifacts import ArtifactStore
from shared.bus import STREAM_NAME, consumer_name, publish_event
from shared.contracts import NodeInfo, NodeLost, Phase3Completed
from tests.services.validator.conftest import DIGITS_SPEC, install_model
from tests.services.validator.support import (
    CLUSTER_DIRECTORY,
    EventWatcher,
    InProcessValidatorNode,
    validator_node_info,
)
from tests.support import as_service, memory_keys

PHASE4_SUBJECTS = ["nexus.phase4.passed", "nexus.phase4.failed"]


def phase3_completed(
    tenant_id: str,
    workflow_id: uuid.UUID,
    model_uri: str,
    nodes: list[NodeInfo],
    spec: dict[str, Any] | None = None,
) -> Phase3Completed:
    """Phase 3's event for a new cluster whose `nodes` the cluster service reports."""
    cluster_id = uuid.uuid4()
    CLUSTER_DIRECTORY[str(cluster_id)] = [
        {"id": n.node_id, "role": n.role, "rank": n.rank, "status": "registered"} for n in nodes
    ]
    return Phase3Completed(
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        job_id=uuid.uuid4(),
        model_uri=model_uri,
        metrics={},
        spec=spec or DIGITS_SPEC,
        cluster_id=cluster_id,
    )


async def memory_value(memory_url: str, token: str, tenant: str, wf: uuid.UUID, key: str) -> Any:
    """The key's value once the memory service has stored it from phase 4's event; None when
    it was not written (phase 4 writes all its keys in one event, so once `neural/validation`
    is there, a key still missing was not written)."""
    values = await memory_keys(
        memory_url, as_service(token, tenant), wf, {key, "neural/validation"}
    )
    return values.get(key)


async def wait_for_status(
    client: httpx.AsyncClient, headers: dict[str, str], validation_id: str, timeout: float = 60
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            body: dict[str, Any] = (
                await client.get(f"/validations/{validation_id}", headers=headers)
            ).json()
            if body["status"] not in ("queued", "running"):
                return body
            await asyncio.sleep(0.2)


async def test_phase3_completed_leads_to_phase4_passed_with_report_and_memory(
    validator: tuple[httpx.AsyncClient, Any],
    clusters: dict[str, list[dict[str, Any]]],
    artifacts: ArtifactStore,
    digits_model: Path,
    memory_url: str,
    nats_url: str,
    internal_token: str,
    tenant_id: str,
) -> None:
    client, context = validator
    workflow_id = uuid.uuid4()
    model_uri = install_model(artifacts, tenant_id, workflow_id, digits_model)
    node = validator_node_info()
    event = phase3_completed(tenant_id, workflow_id, model_uri, [node])
    headers = as_service(internal_token, tenant_id)
    async with (
        InProcessValidatorNode(nats_url, node, str(event.cluster_id)) as running_node,
        EventWatcher(nats_url, workflow_id, PHASE4_SUBJECTS) as watcher,
    ):
        await publish_event(context.broker, event)
        subject, outcome = await watcher.first()
        assert subject == "nexus.phase4.passed", outcome
        assert [task["kind"] for task in running_node.tasks] == ["validate"]
        metrics = outcome["metrics"]
        assert metrics["test_accuracy"] > 0.85 and metrics["p99_latency_ms"] < 100
        assert metrics["train_val_gap"] < 0.05 and outcome["model_uri"] == model_uri

        (validation,) = (
            await client.get(
                "/validations", params={"workflow_id": str(workflow_id)}, headers=headers
            )
        ).json()["validations"]
        assert validation["id"] == outcome["validation_id"]
        assert validation["status"] == "passed" and validation["node_id"] == node.node_id
        assert validation["results"]["test"]["accuracy"] == metrics["test_accuracy"]
        report = await client.get(f"/validations/{validation['id']}/report", headers=headers)
        assert report.status_code == 200
        assert report.headers["content-type"].startswith("text/markdown")
        assert "**Outcome: PASSED**" in report.text

        project = Path(artifacts.path(tenant_id, str(workflow_id), "neural"))
        assert (project / "tests/validation.py").is_file()
        config = json.loads((project / "configs/validation.json").read_text())
        assert config["dataset"] == "digits" and config["seed"] == 42
        stored = await memory_value(
            memory_url, internal_token, tenant_id, workflow_id, "neural/validation"
        )
        assert stored["passed"] and stored["validation_id"] == validation["id"]
        bench = await memory_value(
            memory_url, internal_token, tenant_id, workflow_id, "neural/benchmark-results"
        )
        assert bench["latency_ms"]["p99_ms"] == metrics["p99_latency_ms"]
        summary = await memory_value(
            memory_url, internal_token, tenant_id, workflow_id, "neural/report"
        )
        assert summary["uri"] == validation["report_uri"] and "PASSED" in summary["summary"]
        complete = await memory_value(
            memory_url, internal_token, tenant_id, workflow_id, "neural/phase4-complete"
        )
        assert complete["complete"] is True

        # A re-run asked for through the API: same node (found through the cluster service),
        # its own report, and no second phase 4 event.
        clusters[str(event.cluster_id)] = [
            {"id": node.node_id, "role": "validator", "rank": 3, "status": "ready"},
            {"id": "worker-0", "role": "worker", "rank": 0, "status": "ready"},
        ]
        rerun = await client.post(
            "/validations", json={"workflow_id": str(workflow_id)}, headers=headers
        )
        assert rerun.status_code == 202, rerun.text
        assert rerun.json()["trigger"] == "manual" and rerun.json()["status"] == "running"
        finished = await wait_for_status(client, headers, rerun.json()["id"])
        assert finished["status"] == "passed"
        assert finished["report_uri"].endswith(f"neural/reports/validations/{finished['id']}.md")
        await asyncio.sleep(0.5)
        assert len(watcher.received) == 1


async def test_an_impossible_gate_fails_phase4_naming_it(
    validator: tuple[httpx.AsyncClient, Any],
    artifacts: ArtifactStore,
    digits_model: Path,
    memory_url: str,
    nats_url: str,
    internal_token: str,
    tenant_id: str,
) -> None:
    client, context = validator
    workflow_id = uuid.uuid4()
    model_uri = install_model(artifacts, tenant_id, workflow_id, digits_model)
    node = validator_node_info()
    spec = {**DIGITS_SPEC, "gates": {"max_p99_latency_ms": 1e-6}}
    event = phase3_completed(tenant_id, workflow_id, model_uri, [node], spec)
    async with (
        InProcessValidatorNode(nats_url, node, str(event.cluster_id)),
        EventWatcher(nats_url, workflow_id, PHASE4_SUBJECTS) as watcher,
    ):
        await publish_event(context.broker, event)
        subject, outcome = await watcher.first()
    assert subject == "nexus.phase4.failed" and outcome["phase"] == 4
    assert outcome["reason"].startswith("quality gates failed: max_p99_latency_ms (")
    assert outcome["details"]["failed_gates"] == ["max_p99_latency_ms"]
    headers = as_service(internal_token, tenant_id)
    report = await client.get(
        f"/validations/{outcome['details']['validation_id']}/report", headers=headers
    )
    assert "**Outcome: FAILED**" in report.text
    stored = await memory_value(
        memory_url, internal_token, tenant_id, workflow_id, "neural/validation"
    )
    assert stored["passed"] is False
    values = await memory_keys(memory_url, headers, workflow_id, {"neural/validation"}, timeout=5)
    assert "neural/phase4-complete" not in values


async def test_no_answering_validator_node_fails_phase4(
    validator: tuple[httpx.AsyncClient, Any],
    nats_url: str,
    internal_token: str,
    tenant_id: str,
) -> None:
    client, context = validator
    workflow_id = uuid.uuid4()
    # A node that was never started: nobody answers its task subject.
    event = phase3_completed(tenant_id, workflow_id, "file:///nowhere", [validator_node_info()])
    async with EventWatcher(nats_url, workflow_id, PHASE4_SUBJECTS) as watcher:
        await publish_event(context.broker, event)
        subject, outcome = await watcher.first()
    assert subject == "nexus.phase4.failed"
    assert "did not answer the task" in outcome["reason"]
    (validation,) = (
        await client.get(
            "/validations",
            params={"workflow_id": str(workflow_id)},
            headers=as_service(internal_token, tenant_id),
        )
    ).json()["validations"]
    assert validation["status"] == "error" and "did not answer" in validation["error"]


async def test_a_redelivered_phase3_event_starts_one_validation(
    validator: tuple[httpx.AsyncClient, Any],
    nats_url: str,
    internal_token: str,
    tenant_id: str,
) -> None:
    client, context = validator
    workflow_id = uuid.uuid4()
    event = phase3_completed(tenant_id, workflow_id, "file:///nowhere", [validator_node_info()])
    body = json.dumps(event.model_dump(mode="json")).encode()
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        # Two stream messages carrying one event, as a publisher retrying after a lost ack.
        for attempt in ("a", "b"):
            await js.publish(
                Phase3Completed.subject,
                body,
                stream=STREAM_NAME,
                headers={"Nats-Msg-Id": f"{event.event_id}-{attempt}"},
            )
        async with asyncio.timeout(30):
            while True:
                info = await js.consumer_info(STREAM_NAME, consumer_name(PHASE3_CONSUMER))
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    break
                await asyncio.sleep(0.1)
    finally:
        await connection.close()
    listed = await client.get(
        "/validations",
        params={"workflow_id": str(workflow_id)},
        headers=as_service(internal_token, tenant_id),
    )
    assert len(listed.json()["validations"]) == 1


@pytest.mark.parametrize("spec", [{"dataset": "digits"}, {**DIGITS_SPEC, "dataset": "mnist"}])
async def test_an_event_with_an_invalid_spec_is_rejected_and_the_next_one_handled(
    validator: tuple[httpx.AsyncClient, Any],
    nats_url: str,
    internal_token: str,
    tenant_id: str,
    spec: dict[str, Any],
) -> None:
    client, context = validator
    forged_id, next_id = uuid.uuid4(), uuid.uuid4()
    good = phase3_completed(tenant_id, forged_id, "file:///m", [validator_node_info()])
    forged = {**good.model_dump(mode="json"), "spec": spec}
    await context.broker.publish(forged, good.subject, stream="NEXUS", timeout=10)
    # The next event is handled: the malformed one was rejected, not redelivered in a loop.
    following = phase3_completed(tenant_id, next_id, "file:///nowhere", [])
    async with EventWatcher(nats_url, next_id, PHASE4_SUBJECTS) as watcher:
        await publish_event(context.broker, following)
        subject, _ = await watcher.first()
    assert subject == "nexus.phase4.failed"
    listed = await client.get(
        "/validations",
        params={"workflow_id": str(forged_id)},
        headers=as_service(internal_token, tenant_id),
    )
    assert listed.json()["validations"] == []


def _lost(event: Phase3Completed, node: NodeInfo) -> NodeLost:
    return NodeLost(
        workflow_id=event.workflow_id,
        tenant_id=event.tenant_id,
        cluster_id=event.cluster_id,
        node_id=node.node_id,
        role="validator",
        rank=0,
        reason="it missed 3 heartbeats (silent for 1.6 s)",
        silent_s=1.6,
    )


async def _validations(
    client: httpx.AsyncClient, workflow_id: uuid.UUID, headers: dict[str, str]
) -> list[dict[str, Any]]:
    listed = await client.get(
        "/validations", params={"workflow_id": str(workflow_id)}, headers=headers
    )
    found: list[dict[str, Any]] = listed.json()["validations"]
    return found


async def _until_running(
    client: httpx.AsyncClient, workflow_id: uuid.UUID, headers: dict[str, str]
) -> None:
    """Wait until the workflow's validation was accepted by a node."""
    async with asyncio.timeout(30):
        while not any(
            v["status"] == "running" for v in await _validations(client, workflow_id, headers)
        ):
            await asyncio.sleep(0.1)


async def _accepting_node(nc: Any, node: NodeInfo, received: list[dict[str, Any]]) -> None:
    """A node that takes every task (and never reports: the test looks at who got it)."""

    async def accept(message: Any) -> None:
        received.append(json.loads(message.data))
        await message.respond(json.dumps({"accepted": True}).encode())

    await nc.subscribe(f"nodes.{node.node_id}.task", cb=accept)


async def test_a_validation_whose_node_is_lost_is_handed_to_another_live_node(
    validator: tuple[httpx.AsyncClient, Any],
    nats_url: str,
    internal_token: str,
    tenant_id: str,
) -> None:
    client, context = validator
    workflow_id, node = uuid.uuid4(), validator_node_info()
    worker = NodeInfo(
        node_id=f"worker-{uuid.uuid4().hex[:8]}", role="worker", rank=0, pid=0, host="127.0.0.1"
    )
    event = phase3_completed(tenant_id, workflow_id, "file:///model", [node, worker])
    headers = as_service(internal_token, tenant_id)
    nc = await nats.connect(nats_url)
    to_validator: list[dict[str, Any]] = []
    to_worker: list[dict[str, Any]] = []
    await _accepting_node(nc, node, to_validator)
    await _accepting_node(nc, worker, to_worker)
    try:
        await publish_event(context.broker, event)
        await _until_running(client, workflow_id, headers)
        assert [t["kind"] for t in to_validator] == ["validate"] and to_worker == []
        await publish_event(context.broker, _lost(event, node))
        async with asyncio.timeout(30):
            while not to_worker:
                await asyncio.sleep(0.05)
    finally:
        await nc.close()
    assert to_worker[0]["kind"] == "validate"
    (validation,) = await _validations(client, workflow_id, headers)
    assert validation["status"] == "running" and validation["node_id"] == worker.node_id


async def test_a_validator_node_lost_with_no_other_node_fails_phase4_at_once(
    validator: tuple[httpx.AsyncClient, Any],
    nats_url: str,
    internal_token: str,
    tenant_id: str,
) -> None:
    client, context = validator
    workflow_id, node = uuid.uuid4(), validator_node_info()
    event = phase3_completed(tenant_id, workflow_id, "file:///model", [node])
    nc = await nats.connect(nats_url)
    await _accepting_node(nc, node, [])  # takes the task, then dies
    headers = as_service(internal_token, tenant_id)
    try:
        async with EventWatcher(nats_url, workflow_id, PHASE4_SUBJECTS) as watcher:
            await publish_event(context.broker, event)
            await _until_running(client, workflow_id, headers)
            lost = _lost(event, node)
            await publish_event(context.broker, lost)
            subject, outcome = await watcher.first()
    finally:
        await nc.close()
    assert subject == "nexus.phase4.failed"
    assert outcome["reason"] == (
        f"validation could not start: node {node.node_id} was lost during validation: "
        f"{lost.reason}; no other node could take it over: cluster {event.cluster_id} has no "
        "running node to validate on"
    )
    (validation,) = await _validations(client, workflow_id, headers)
    assert validation["status"] == "error"
    assert validation["error"] == outcome["reason"].removeprefix("validation could not start: ")
