"""Test helpers for the validator: a recording task context, and a validator node that
speaks the node protocol over the real NATS server inside the test process."""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
import uuid
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from shared.bus import NODE_TASK_SUBJECT, STREAM_NAME
from shared.contracts import Event, NodeInfo, subject_of
from shared.node_tasks import TASK_HANDLERS, TaskHandler


def validator_node_info(node_id: str | None = None) -> NodeInfo:
    return NodeInfo(
        node_id=node_id or f"validator-{uuid.uuid4().hex[:8]}",
        role="validator",
        rank=3,
        pid=0,
        host="127.0.0.1",
    )


class RecordingContext:
    """A TaskContext that keeps what the task publishes instead of sending it."""

    def __init__(self, node: NodeInfo | None = None) -> None:
        self.node = node or validator_node_info()
        self.cluster_id = str(uuid.uuid4())
        self.artifacts_url = ""
        self.cancelled = threading.Event()
        self.published: list[Event] = []

    def publish(self, event: Event) -> None:
        self.published.append(event)

    publish_soon = publish  # a test double: every publish waits for its ack


def task_handler(kind: str) -> TaskHandler:
    """Resolve a task kind through the registry the node processes use."""
    module, _, function = TASK_HANDLERS[kind].partition(":")
    handler: TaskHandler = getattr(importlib.import_module(module), function)
    return handler


class InProcessValidatorNode:
    """Answers `nodes.{node_id}.task` with {"accepted": true} and runs the task handler in a
    worker thread, publishing its events to JetStream, as a cluster node process does."""

    def __init__(self, nats_url: str, node: NodeInfo, cluster_id: str) -> None:
        self._url = nats_url
        self.node = node
        self.cluster_id = cluster_id
        self.artifacts_url = ""
        self.cancelled = threading.Event()
        self.tasks: list[dict[str, Any]] = []
        self._client: Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> InProcessValidatorNode:
        self._loop = asyncio.get_running_loop()
        self._client = await nats.connect(self._url)
        subject = NODE_TASK_SUBJECT.format(node_id=self.node.node_id)
        await self._client.subscribe(subject, cb=self._on_task)
        await self._client.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        assert self._client is not None
        await self._client.drain()

    async def _on_task(self, msg: Msg) -> None:
        task = json.loads(msg.data)
        self.tasks.append(task)
        await msg.respond(json.dumps({"accepted": True}).encode())
        handler = task_handler(task["kind"])
        running = asyncio.create_task(asyncio.to_thread(handler, task["payload"], self))
        self._running.add(running)
        running.add_done_callback(self._running.discard)

    def publish(self, event: Event) -> None:
        assert self._client is not None and self._loop is not None
        publish = self._client.jetstream().publish(
            subject_of(event),
            json.dumps(event.model_dump(mode="json")).encode(),
            stream=STREAM_NAME,
            headers={"Nats-Msg-Id": str(event.event_id)},
        )
        asyncio.run_coroutine_threadsafe(publish, self._loop).result(timeout=10)

    publish_soon = publish  # a test double: every publish waits for its ack


class EventWatcher:
    """Collects events of one workflow from core NATS subjects (JetStream publishes are
    delivered to plain subscribers too)."""

    def __init__(self, nats_url: str, workflow_id: uuid.UUID, subjects: list[str]) -> None:
        self._url = nats_url
        self._workflow = str(workflow_id)
        self._subjects = subjects
        self.received: list[tuple[str, dict[str, Any]]] = []
        self._arrived = asyncio.Event()
        self._client: Client | None = None

    async def __aenter__(self) -> EventWatcher:
        self._client = await nats.connect(self._url)
        for subject in self._subjects:
            await self._client.subscribe(subject, cb=self._on_message)
        await self._client.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._client is not None
        await self._client.close()

    async def _on_message(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        if body.get("workflow_id") == self._workflow:
            self.received.append((msg.subject, body))
            self._arrived.set()

    async def first(self, timeout: float = 60.0) -> tuple[str, dict[str, Any]]:
        await asyncio.wait_for(self._arrived.wait(), timeout)
        return self.received[0]


# cluster id -> its nodes, as the fake cluster service reports them.
CLUSTER_DIRECTORY: dict[str, list[dict[str, Any]]] = {}


def cluster_directory_app(clusters: dict[str, list[dict[str, Any]]]) -> Any:
    """Answers `GET /clusters/{id}` in the cluster service's response shape, from `clusters`.

    It stands in for the cluster service only in these tests: the real one supervises node
    processes, which the validator's tests do not start.
    """
    from fastapi import FastAPI, HTTPException

    app = FastAPI()

    @app.get("/clusters/{cluster_id}")
    async def get_cluster(cluster_id: str) -> dict[str, Any]:
        if cluster_id not in clusters:
            raise HTTPException(404, f"no cluster {cluster_id}")
        return {"id": cluster_id, "status": "ready", "nodes": clusters[cluster_id]}

    return app
