"""A workflow's event stream is woken by Postgres (LISTEN/NOTIFY on every change of the
workflow or its phases), not by polling; and it sends each change as it happens."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable

import httpx
from fastapi import FastAPI
from nats.aio.client import Client

from services.cluster.repository import WorkflowRepository
from services.cluster.service.status import record_phase_completed
from services.cluster.workflow_changes import WorkflowChanges
from shared.contracts import PhaseFailed
from shared.db import create_engine
from shared.settings import normalize_database_url
from tests.services.cluster.conftest import publish, seed_workflow, wait_until
from tests.support import as_service, serving


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return check()

    return checked


async def _complete_phase(app: FastAPI, tenant_id: str, workflow_id: uuid.UUID, phase: int) -> None:
    async with app.state.context.unit_of_work() as uow:
        repo = WorkflowRepository(uow.session, tenant_id)
        workflow = await repo.get(workflow_id)
        assert workflow is not None
        record_phase_completed(workflow, await repo.phases_of(workflow_id), phase)


async def test_a_committed_change_wakes_the_streams_of_that_workflow_only(
    app: FastAPI, migrated_database: str, tenant_id: str
) -> None:
    changes = WorkflowChanges()
    engine = create_engine(normalize_database_url(migrated_database))
    listener = asyncio.create_task(changes.listen_forever(engine))
    try:
        await wait_until(_async(lambda: changes.listening), timeout=10)
        ours = await seed_workflow(app, tenant_id)
        other = await seed_workflow(app, tenant_id)
        with changes.follow(ours) as ours_changed:
            await _complete_phase(app, tenant_id, ours, 2)
            # Delivered in commit order: the seeds' notifications have arrived too by now.
            await asyncio.wait_for(ours_changed.wait(), timeout=10)
            with changes.follow(other) as other_changed:
                ours_changed.clear()
                await _complete_phase(app, tenant_id, ours, 3)
                await asyncio.wait_for(ours_changed.wait(), timeout=10)
                assert not other_changed.is_set(), "another workflow's stream was woken"
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        await engine.dispose()
    assert not changes.listening


async def test_an_open_stream_sends_each_change_then_ends_with_the_workflow(
    app: FastAPI, nc: Client, internal_token: str, tenant_id: str
) -> None:
    headers = as_service(internal_token, tenant_id)
    workflow_id = await seed_workflow(app, tenant_id)
    frames: list[dict[str, object]] = []

    async def follow() -> None:
        # Over real HTTP: the in-process transport would hand over the body only at its end.
        async with serving(app, lifespan="off") as base_url, httpx.AsyncClient() as client:
            url = f"{base_url}/workflows/{workflow_id}/events"
            async with client.stream("GET", url, headers=headers) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        frames.append(json.loads(line.removeprefix("data: ")))

    stream = asyncio.create_task(follow())
    await wait_until(_async(lambda: len(frames) >= 1), timeout=10)
    await _complete_phase(app, tenant_id, workflow_id, 2)
    await wait_until(_async(lambda: any(f["current_phase"] == 3 for f in frames)), timeout=10)
    failed = PhaseFailed(workflow_id=workflow_id, tenant_id=tenant_id, phase=3, reason="no nodes")
    await publish(nc, failed)
    await asyncio.wait_for(stream, timeout=20)  # the stream ends once the workflow did
    assert frames[-1]["status"] == "failed" and frames[-1]["error"] == "no nodes"
