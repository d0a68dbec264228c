"""A worker node reduced to its task protocol, for driving the trainer through real NATS.

It answers `nodes.{node_id}.task` as a node process does (`{"accepted": true}` at once, then
the task's handler in a worker thread) and publishes the handler's events to JetStream. The
cluster service's node runtime is the full version (registration, heartbeats, rendezvous).
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import nats

from services.trainer.node_task import run_training
from shared.contracts import Event, NodeInfo, subject_of


class InProcessWorkerNode:
    def __init__(self, nats_url: str, node: NodeInfo, artifacts_url: str) -> None:
        self.nats_url = nats_url
        self.node = node
        self.cluster_id = ""
        self.artifacts_url = artifacts_url
        self.cancelled = threading.Event()
        self.cancel_reason: str | None = None  # a real node sets it when a deadline cancels
        self.tasks: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []

    async def __aenter__(self) -> InProcessWorkerNode:
        self._loop = asyncio.get_running_loop()
        self._nc = await nats.connect(self.nats_url)
        self._js = self._nc.jetstream()
        await self._nc.subscribe(f"nodes.{self.node.node_id}.task", cb=self._on_task)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancelled.set()
        for thread in self._threads:
            await asyncio.to_thread(thread.join, 60)
        await self._nc.close()

    async def _on_task(self, msg: Any) -> None:
        task = json.loads(msg.data)
        self.tasks.append(task)
        if task["kind"] == "cancel":
            self.cancelled.set()
        elif task["kind"] == "train":
            thread = threading.Thread(target=run_training, args=(task["payload"], self))
            self._threads.append(thread)
            thread.start()
        else:
            await msg.respond(json.dumps({"accepted": False, "error": "unknown kind"}).encode())
            return
        await msg.respond(json.dumps({"accepted": True}).encode())

    def publish(self, event: Event) -> None:
        """TaskContext.publish: from the task's thread onto the node's loop, awaiting the ack."""
        publish = self._js.publish(
            subject_of(event),
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": str(event.event_id)},
        )
        asyncio.run_coroutine_threadsafe(publish, self._loop).result(timeout=30)

    publish_soon = publish  # a test double: every publish waits for its ack
