"""Per-process state of the cluster service, kept in `context.extras["runtime"]`: the node
processes it started, heartbeats waiting to be written, topology checks in flight, and its
background tasks."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.cluster.process_manager import NodeProcessManager, node_environment
from services.cluster.settings import ClusterSettings
from shared.service_app import ServiceContext

logger = logging.getLogger(__name__)


def owner_id() -> str:
    """Identifies this service process; node processes die with it."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class ClusterRuntime:
    settings: ClusterSettings
    manager: NodeProcessManager
    owner: str = field(default_factory=owner_id)
    # node id -> when its latest heartbeat arrived; flushed to Postgres about once a second.
    heartbeats: dict[str, datetime] = field(default_factory=dict)
    # cluster id -> monotonic time its nodes were started (for the registration deadline).
    starting: dict[uuid.UUID, float] = field(default_factory=dict)
    verifying: set[uuid.UUID] = field(default_factory=set)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run in the background; the reference is kept so the task is not collected."""
        task = asyncio.create_task(coroutine, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def nodes_started(self, cluster_id: uuid.UUID) -> None:
        self.starting[cluster_id] = time.monotonic()

    async def cancel_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def create_runtime(context: ServiceContext) -> ClusterRuntime:
    settings = cluster_settings(context)
    env = node_environment(
        {
            "NEXUS_NATS_URL": settings.nats_url,
            "NEXUS_ARTIFACTS": settings.artifacts,
            "NEXUS_HOME": str(settings.home),
            "NEXUS_ENV": settings.env,
            "NEXUS_LOG_LEVEL": settings.log_level,
            **({"NEXUS_OTLP_ENDPOINT": settings.otlp_endpoint} if settings.otlp_endpoint else {}),
        }
    )
    manager = NodeProcessManager(settings.home / "logs" / "nodes", env, settings.node_host)
    runtime = ClusterRuntime(settings=settings, manager=manager)
    context.extras["runtime"] = runtime
    return runtime


def runtime_of(context: ServiceContext) -> ClusterRuntime:
    runtime: ClusterRuntime = context.extras["runtime"]
    return runtime


def cluster_settings(context: ServiceContext) -> ClusterSettings:
    settings = context.settings
    assert isinstance(settings, ClusterSettings), "the cluster app is built with ClusterSettings"
    return settings
