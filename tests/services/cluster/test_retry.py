"""`POST /workflows/{id}/retry`: a failed workflow runs again as a new one whose training
resumes from the failed run's checkpoints, with the changes asked for; anything else is a
clear 4xx that creates nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.cluster.repository import WorkflowRepository
from services.cluster.service.status import record_phase_completed, record_phase_failed
from tests.services.cluster.conftest import count_workflows, seed_workflow
from tests.support import as_service


async def _fail_in_training(app: FastAPI, tenant_id: str, workflow_id: uuid.UUID) -> None:
    async with app.state.context.unit_of_work() as uow:
        repo = WorkflowRepository(uow.session, tenant_id)
        workflow = await repo.get(workflow_id, for_update=True)
        assert workflow is not None
        phases = await repo.phases_of(workflow_id)
        record_phase_completed(workflow, phases, 2)
        workflow.progress = {"epoch": 5, "epochs": 30}
        record_phase_failed(workflow, phases, 3, "training diverged")


async def _stop_clusters(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for cluster in (await client.get("/clusters", headers=headers)).json():
        await client.delete(f"/clusters/{cluster['id']}", headers=headers)


async def test_a_failed_workflow_is_retried_as_a_new_one_resuming_its_training(
    app: FastAPI, client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    failed = await seed_workflow(app, tenant_id)
    await _fail_in_training(app, tenant_id, failed)
    body = {"training": {"learning_rate": 0.0001, "grad_clip_norm": 1.0}}
    try:
        retry = await client.post(f"/workflows/{failed}/retry", json=body, headers=headers)
        assert retry.status_code == 202, retry.text
        retried = retry.json()
        assert retried["id"] != str(failed) and retried["name"] == "seeded"
        assert retried["phases"][0]["status"] == "completed"
        stored = app.state.context
        async with stored.unit_of_work() as uow:
            workflow = await WorkflowRepository(uow.session, tenant_id).get(
                uuid.UUID(retried["id"])
            )
        assert workflow is not None
        training = workflow.spec["training"]
        assert training["resume_from"] == str(failed)
        assert training["learning_rate"] == 0.0001 and training["grad_clip_norm"] == 1.0
    finally:
        await _stop_clusters(client, headers)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"training": {"batch_size": 8}}, 422, "training.batch_size"),
        ({"training": {"learning_rate": 0}}, 422, "training.learning_rate"),
        ({"training": {"epochs": 4}}, 422, "4 is fewer than the 5 epochs the failed run trained"),
        ({"training": {"epochs": 50}}, 202, None),
    ],
)
async def test_retry_changes_are_validated(
    app: FastAPI,
    client: httpx.AsyncClient,
    internal_token: str,
    tenant_id: str,
    body: dict[str, Any],
    status: int,
    message: str | None,
) -> None:
    headers = as_service(internal_token, tenant_id)
    failed = await seed_workflow(app, tenant_id)
    await _fail_in_training(app, tenant_id, failed)
    try:
        answer = await client.post(f"/workflows/{failed}/retry", json=body, headers=headers)
        assert answer.status_code == status, answer.text
        if message is not None:
            assert message in str(answer.json()["detail"])
            assert await count_workflows(app, tenant_id) == 1
    finally:
        await _stop_clusters(client, headers)


async def test_only_a_failed_workflow_of_ones_own_is_retried(
    app: FastAPI, client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    running = await seed_workflow(app, tenant_id)
    answer = await client.post(f"/workflows/{running}/retry", headers=headers)
    assert answer.status_code == 409
    assert "is running: only a failed one is retried" in answer.json()["detail"]
    failed = await seed_workflow(app, tenant_id)
    await _fail_in_training(app, tenant_id, failed)
    other = as_service(internal_token, f"other-{tenant_id}")
    assert (await client.post(f"/workflows/{failed}/retry", headers=other)).status_code == 404
    unknown = await client.post(f"/workflows/{uuid.uuid4()}/retry", headers=headers)
    assert unknown.status_code == 404
    assert await count_workflows(app, tenant_id) == 2
