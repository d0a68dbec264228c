"""Fixtures for the cluster service's tests: the memory service on a real port (the cluster
service calls it over HTTP), the cluster app in-process, and a NATS client to watch events."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import nats
import pytest
from fastapi import FastAPI
from nats.aio.client import Client
from nats.js.api import DeliverPolicy
from sqlalchemy import select

from services.cluster.app import create_app
from services.cluster.repository import WorkflowRepository
from services.cluster.service.status import record_phase_completed
from services.cluster.settings import ClusterSettings
from shared.bus import STREAM_NAME
from shared.contracts import Event, subject_of
from tests.support import running


@pytest.fixture(scope="module")
async def cluster_app(memory_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(ClusterSettings(memory_url=memory_url))  # type: ignore[call-arg]
    async with running(app) as client:
        yield app, client


@pytest.fixture
def client(cluster_app: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return cluster_app[1]


@pytest.fixture
def app(cluster_app: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return cluster_app[0]


@pytest.fixture(scope="session")
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    yield client
    await client.close()


async def publish(nc: Client, event: Event) -> None:
    """Publish an event as another service would (straight to JetStream)."""
    await nc.jetstream().publish(
        subject_of(event),
        event.model_dump_json().encode(),
        stream=STREAM_NAME,
        headers={"Nats-Msg-Id": str(event.event_id)},
    )


class EventWatcher:
    """Collects new JetStream messages on a subject (an ephemeral ordered consumer)."""

    def __init__(self, subscription: Any) -> None:
        self._sub = subscription

    async def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError("no matching event")
            msg = await self._sub.next_msg(timeout=remaining)
            body: dict[str, Any] = json.loads(msg.data)
            if match(body):
                return body


@pytest.fixture
async def watch(nc: Client) -> AsyncIterator[Callable[[str], Any]]:
    subscriptions = []

    async def start(subject: str) -> EventWatcher:
        sub = await nc.jetstream().subscribe(
            subject, stream=STREAM_NAME, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
        )
        subscriptions.append(sub)
        return EventWatcher(sub)

    yield start
    for sub in subscriptions:
        await sub.unsubscribe()


async def seed_workflow(app: FastAPI, tenant_id: str, *, phase1_done: bool = True) -> uuid.UUID:
    """A workflow row as phase 1 leaves it, without starting nodes (no event is emitted)."""
    workflow_id = uuid.uuid4()
    async with app.state.context.unit_of_work() as uow:
        spec = {"name": "seeded", "dataset": "iris"}
        workflow, phases = await WorkflowRepository(uow.session, tenant_id).create(
            workflow_id, tenant_id, "seeded", spec
        )
        if phase1_done:
            record_phase_completed(workflow, phases, 1, {"seeded": True})
    return workflow_id


async def count_workflows(app: FastAPI, tenant_id: str) -> int:
    async with app.state.context.sessionmaker() as session:
        return await WorkflowRepository(session, tenant_id).count()


async def handled(app: FastAPI, *event_ids: uuid.UUID) -> bool:
    """Whether a consumer of the cluster service has processed every one of these events."""
    table = app.state.context.metadata.tables["cluster.processed_events"]
    async with app.state.context.sessionmaker() as session:
        found = await session.scalars(
            select(table.c.event_id).where(table.c.event_id.in_(event_ids))
        )
        return set(found) == set(event_ids)


async def wait_until(check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)
