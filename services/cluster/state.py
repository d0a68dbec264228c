"""The cluster service's process state, built by the lifespan: the node processes it started,
heartbeats waiting to be written, topology checks in flight, and its background tasks."""

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
from typing import Annotated, Any

from fastapi import Depends
from prometheus_client import CollectorRegistry, Counter

from services.cluster.process_manager import (
    NodeProcessManager,
    node_environment,
    node_fork_launcher,
)
from services.cluster.settings import ClusterSettings
from services.cluster.workflow_changes import WorkflowChanges
from shared.service_app import ServiceContext, get_context
from shared.tasks import cancel_and_wait

logger = logging.getLogger(__name__)


def owner_id() -> str:
    """Identifies this service process; node processes die with it."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class NodeMetrics:
    """Prometheus counters of node churn, on the service's registry."""

    joined: Counter
    lost: Counter
    replaced: Counter

    @classmethod
    def on(cls, registry: CollectorRegistry) -> NodeMetrics:
        return cls(
            joined=Counter(
                "nexus_nodes_joined_total",
                "Node registrations accepted into a cluster",
                ["role"],
                registry=registry,
            ),
            lost=Counter(
                "nexus_nodes_lost_total",
                "Nodes declared lost: their process exited, or they missed three heartbeats",
                ["role", "cause"],
                registry=registry,
            ),
            replaced=Counter(
                "nexus_nodes_replaced_total",
                "Node processes started in a lost node's place",
                ["role"],
                registry=registry,
            ),
        )


@dataclass
class ClusterState:
    manager: NodeProcessManager
    metrics: NodeMetrics
    owner: str = field(default_factory=owner_id)
    # node id -> when its latest heartbeat arrived; flushed to Postgres about once a second.
    heartbeats: dict[str, datetime] = field(default_factory=dict)
    # node id -> monotonic time of its latest heartbeat, for the silence check; a node leaves
    # it when declared lost or stopped.
    last_heard: dict[str, float] = field(default_factory=dict)
    # cluster id -> monotonic time its nodes were started (for the registration deadline).
    starting: dict[uuid.UUID, float] = field(default_factory=dict)
    verifying: set[uuid.UUID] = field(default_factory=set)
    # Heartbeating nodes being adopted now, and those known not to be ours to adopt.
    adopting: set[str] = field(default_factory=set)
    not_ours: set[str] = field(default_factory=set)
    started_at: float = field(default_factory=time.monotonic)
    # Set when nodes stop: queued clusters may fit now.
    capacity_freed: asyncio.Event = field(default_factory=asyncio.Event)
    # Wakes the event streams of a workflow that changed (Postgres NOTIFY).
    changes: WorkflowChanges = field(default_factory=WorkflowChanges)
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

    def silent_nodes(self, silent_after_s: float) -> dict[str, float]:
        """Nodes not heard for longer than `silent_after_s`: node id -> seconds silent."""
        now = time.monotonic()
        return {n: now - t for n, t in self.last_heard.items() if now - t > silent_after_s}

    def nodes_started(self, cluster_id: uuid.UUID) -> None:
        self.starting[cluster_id] = time.monotonic()

    async def cancel_tasks(self) -> None:
        await cancel_and_wait(list(self.tasks))


def create_state(context: ServiceContext[ClusterSettings, ClusterState]) -> ClusterState:
    settings = context.settings
    env = node_environment(
        {
            "NEXUS_NATS_URL": settings.nats_url,
            "NEXUS_ARTIFACTS": settings.artifacts,
            "NEXUS_HOME": str(settings.home),
            "NEXUS_ENV": settings.env,
            "NEXUS_LOG_LEVEL": settings.log_level,
            "NEXUS_HEARTBEAT_INTERVAL_S": str(settings.heartbeat_interval_s),
            "NEXUS_NODE_ORPHAN_GRACE_S": str(settings.node_orphan_grace_s),
            **({"NEXUS_OTLP_ENDPOINT": settings.otlp_endpoint} if settings.otlp_endpoint else {}),
        }
    )
    logs = settings.home / "logs" / "nodes"
    launcher = None
    if settings.node_start == "fork":
        launcher = node_fork_launcher(env, logs)
    manager = NodeProcessManager(logs, env, settings.node_host, launcher)
    return ClusterState(manager=manager, metrics=NodeMetrics.on(context.metrics_registry))


ClusterContext = ServiceContext[ClusterSettings, ClusterState]
# What a route of this service declares to get the context.
ClusterContextDep = Annotated[ClusterContext, Depends(get_context)]
