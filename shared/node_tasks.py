"""The contract between a node process and the tasks it runs.

A node (a process the cluster service starts) receives `{"task_id", "kind", "payload"}` on
`nodes.{node_id}.task`, answers `{"accepted": true}` at once, and runs the task's handler in
a worker thread so heartbeats keep flowing. Handlers belong to the service that owns the
work (`services.trainer.node_task`, `services.validator.node_task`) and report their outcome
by publishing events through the context.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol

from shared.events import Event, NodeInfo

# kind -> "module:function" run as handler(payload, context); imported lazily by the node so
# torch is loaded once per node process and never in a web process.
TASK_HANDLERS: dict[str, str] = {
    "train": "services.trainer.node_task:run_training",
    "validate": "services.validator.node_task:run_validation",
}


class TaskContext(Protocol):
    node: NodeInfo
    cluster_id: str
    artifacts_url: str
    cancelled: threading.Event

    def publish(self, event: Event) -> None:
        """Publish to JetStream from the task's thread; blocks until the server acks."""


TaskHandler = Callable[[dict[str, Any], TaskContext], None]
