"""The cluster service follows every phase's events into the workflow's status, progress and
result (events published as the trainer, validator and deployer would)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from nats.aio.client import Client

from shared.contracts import (
    EventDeadLettered,
    Phase2Completed,
    Phase3Completed,
    Phase4Passed,
    Phase5Completed,
    PhaseFailed,
    TrainingProgress,
)
from tests.services.cluster.conftest import handled, publish, seed_workflow, wait_until
from tests.support import as_service

# A valid spec: the events carry the one phase 1 validated.
SPEC = {"name": "status-test", "dataset": "iris"}


async def _wait_for(
    client: httpx.AsyncClient, headers: dict[str, str], workflow_id: uuid.UUID, check: Any
) -> dict[str, Any]:
    async def current() -> dict[str, Any] | None:
        body: dict[str, Any] = (
            await client.get(f"/workflows/{workflow_id}", headers=headers)
        ).json()
        return body if check(body) else None

    found: dict[str, Any] = await wait_until(current, timeout=20)
    return found


async def _current(
    client: httpx.AsyncClient, headers: dict[str, str], workflow_id: uuid.UUID
) -> Any:
    return (await client.get(f"/workflows/{workflow_id}", headers=headers)).json()


# Other services consume these events too and may react to a made-up one (a trainer fails
# phase 3 for a Phase2Completed with no real spec), so each event gets its own workflow and
# the checks stick to what this service alone decides.


async def test_phase2_completed_closes_phase_2_and_starts_training(
    app: FastAPI, client: httpx.AsyncClient, nc: Client, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    workflow_id = await seed_workflow(app, tenant_id)
    event = Phase2Completed(
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        cluster_id=uuid.uuid4(),
        nodes=[],
        architecture={"hidden": [32]},
        spec=SPEC,
    )
    await publish(nc, event)
    await wait_until(lambda: handled(app, event.event_id), timeout=20)
    workflow = await _current(client, headers, workflow_id)
    assert workflow["current_phase"] >= 3
    assert workflow["phases"][1]["status"] == "completed"
    assert workflow["phases"][1]["detail"] == {"architecture": {"hidden": [32]}, "nodes": 0}
    assert workflow["phases"][2]["started_at"] is not None


async def test_training_progress_is_shown_and_never_goes_back(
    app: FastAPI, client: httpx.AsyncClient, nc: Client, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    workflow_id = await seed_workflow(app, tenant_id)
    job_id = uuid.uuid4()
    events = [
        TrainingProgress(
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            job_id=job_id,
            epoch=epoch,
            epochs=10,
            train_loss=1.0 / epoch,
            train_accuracy=0.5,
            val_loss=0.9,
            val_accuracy=epoch / 4,
            seconds=0.1,
            samples_per_second=1000.0 * epoch,
            nodes=[{"rank": r, "role": "worker", "samples": 10} for r in range(2)],
        )
        for epoch in (2, 1)  # a late, older epoch must not replace a newer one
    ]
    for event in events:
        await publish(nc, event)
    await wait_until(lambda: handled(app, *(e.event_id for e in events)), timeout=20)
    workflow = await _current(client, headers, workflow_id)
    assert workflow["progress"] == {
        "epoch": 2,
        "epochs": 10,
        "train_loss": 0.5,
        "val_accuracy": 0.5,
        "val_r2": None,  # a regression run's score; a classifier reports accuracy
        "samples_per_second": 2000.0,
        "workers": 2,
    }
    assert workflow["current_phase"] == 3 and workflow["phases"][2]["status"] == "running"


async def test_phase3_completed_keeps_the_final_figures_but_not_histories(
    app: FastAPI, client: httpx.AsyncClient, nc: Client, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    workflow_id = await seed_workflow(app, tenant_id)
    event = Phase3Completed(
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        job_id=uuid.uuid4(),
        model_uri="file:///m",
        metrics={"val_accuracy": 0.95, "history": [1, 2, 3]},
        spec=SPEC,
        cluster_id=uuid.uuid4(),
    )
    await publish(nc, event)
    await wait_until(lambda: handled(app, event.event_id), timeout=20)
    workflow = await _current(client, headers, workflow_id)
    assert [p["status"] for p in workflow["phases"][:3]] == ["completed"] * 3
    assert workflow["phases"][2]["detail"] == {
        "job_id": str(event.job_id),
        "metrics": {"val_accuracy": 0.95},
    }


async def test_phase4_passed_records_test_accuracy_and_the_report(
    app: FastAPI, client: httpx.AsyncClient, nc: Client, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    workflow_id = await seed_workflow(app, tenant_id)
    event = Phase4Passed(
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        validation_id=uuid.uuid4(),
        model_uri="file:///m",
        metrics={"test_accuracy": 0.9712, "p99_latency_ms": 1.5},
        spec=SPEC,
    )
    await publish(nc, event)
    await wait_until(lambda: handled(app, event.event_id), timeout=20)
    workflow = await _current(client, headers, workflow_id)
    assert [p["status"] for p in workflow["phases"][:4]] == ["completed"] * 4
    report_uri = app.state.context.artifacts.workflow_url(
        tenant_id, workflow_id, "neural/reports/performance-report.md"
    )
    assert workflow["result"] == {
        "served_url": None,
        "model_id": None,
        "report_uri": report_uri,
        "test_accuracy": 0.9712,
        "test_r2": None,  # a regression model's scores; this one is a classifier
        "test_rmse": None,
    }


async def test_phase5_completed_completes_the_workflow_with_its_result(
    app: FastAPI, client: httpx.AsyncClient, nc: Client, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    workflow_id = await seed_workflow(app, tenant_id)
    event = Phase5Completed(
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        deployment_id=uuid.uuid4(),
        model_id=uuid.uuid4(),
        served_url="http://127.0.0.1:8100",
    )
    await publish(nc, event)
    await wait_until(lambda: handled(app, event.event_id), timeout=20)
    workflow = await _current(client, headers, workflow_id)
    assert workflow["status"] == "completed" and workflow["current_phase"] == 5
    assert [p["status"] for p in workflow["phases"]] == ["completed"] * 5
    assert workflow["error"] is None
    assert workflow["result"]["served_url"] == "http://127.0.0.1:8100"
    assert workflow["result"]["model_id"] == str(event.model_id)
    assert workflow["result"]["report_uri"].endswith("neural/reports/performance-report.md")


async def test_a_failed_phase_fails_the_workflow_and_later_events_do_not_revive_it(
    app: FastAPI, client: httpx.AsyncClient, nc: Client, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    workflow_id = await seed_workflow(app, tenant_id)
    ids = {"workflow_id": workflow_id, "tenant_id": tenant_id}

    await publish(nc, PhaseFailed(**ids, phase=2, reason="architecture invalid"))
    failed = await _wait_for(client, headers, workflow_id, lambda w: w["status"] == "failed")
    assert failed["error"] == "architecture invalid" and failed["current_phase"] == 2
    assert failed["phases"][1]["status"] == "failed"
    assert failed["phases"][1]["detail"] == {"reason": "architecture invalid"}

    progress = TrainingProgress(
        **ids,
        job_id=uuid.uuid4(),
        epoch=1,
        epochs=5,
        train_loss=1.0,
        train_accuracy=0.1,
        val_loss=1.0,
        val_accuracy=0.1,
        seconds=0.1,
    )
    await publish(nc, progress)
    second = PhaseFailed(**ids, phase=4, reason="second failure")
    await publish(nc, second)
    await wait_until(lambda: handled(app, progress.event_id, second.event_id), timeout=20)
    after = (await client.get(f"/workflows/{workflow_id}", headers=headers)).json()
    assert after["status"] == "failed" and after["error"] == "architecture invalid"
    assert after["current_phase"] == 2 and after["progress"] is None


async def test_events_of_another_tenant_do_not_touch_the_workflow(
    app: FastAPI, client: httpx.AsyncClient, nc: Client, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    workflow_id = await seed_workflow(app, tenant_id)
    intruder = PhaseFailed(workflow_id=workflow_id, tenant_id="intruder", phase=2, reason="x")
    await publish(nc, intruder)
    await wait_until(lambda: handled(app, intruder.event_id), timeout=20)
    workflow = (await client.get(f"/workflows/{workflow_id}", headers=headers)).json()
    assert workflow["status"] == "running" and workflow["error"] is None


async def test_a_dead_lettered_event_fails_its_workflow_in_the_current_phase(
    app: FastAPI, client: httpx.AsyncClient, nc: Client, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    workflow_id = await seed_workflow(app, tenant_id)
    letter = EventDeadLettered(
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        consumer="validator-start",
        original_subject="nexus.phase3.completed",
        kind="handler_failed",
        reason="validator-start failed 6 times: OperationalError: the database is down",
        deliveries=6,
        payload="{}",
    )
    await publish(nc, letter)
    failed = await _wait_for(client, headers, workflow_id, lambda w: w["status"] == "failed")
    assert failed["error"] == f"an event could not be handled: {letter.reason}"
    current = failed["current_phase"]
    assert failed["phases"][current - 1]["status"] == "failed"
