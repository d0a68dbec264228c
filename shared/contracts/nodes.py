"""Events about a cluster's node processes."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.base import Event
from shared.spec import WorkflowSpec

NodeRole = Literal["worker", "parameter_server", "validator"]


class NodeInfo(BaseModel):
    node_id: str
    role: NodeRole
    rank: int
    pid: int
    host: str


class Rendezvous(BaseModel):
    """Where a job's processes meet: the TCPStore the cluster's coordinator node hosts (the
    first parameter server, else worker rank 0), elected when the cluster connected."""

    model_config = ConfigDict(extra="forbid")

    node_id: str
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    backend: Literal["gloo", "nccl"] = "gloo"


class NodeRegistered(Event):
    """A node process is up and serves tasks on `nodes.{node_id}.task`. For a standalone
    cluster (one not started for a workflow) workflow_id carries the cluster's id."""

    subject: ClassVar[str] = "nexus.node.registered"
    cluster_id: uuid.UUID
    node: NodeInfo


class NodeJoined(Event):
    """The cluster service accepted a node's registration: it is part of its cluster (at
    start, or later as a replacement)."""

    subject: ClassVar[str] = "nexus.node.joined"
    cluster_id: uuid.UUID
    node: NodeInfo


class NodeLost(Event):
    """A node of a cluster is gone: its process exited (noticed at once by the service that
    started it), or it missed three heartbeats (a hung process, another host)."""

    subject: ClassVar[str] = "nexus.node.lost"
    cluster_id: uuid.UUID
    node_id: str
    role: NodeRole
    rank: int
    reason: str
    exit_code: int | None = None  # when the process exited
    silent_s: float | None = None  # when it stopped heartbeating: for how long


class ClusterStarted(Event):
    """How a workflow's cluster came up: its registered nodes and the measured topology, or
    the error that kept it from coming up. A fact of the cluster service; the trainer, phase
    2's owner, applies the phase-2 gate to it."""

    subject: ClassVar[str] = "nexus.cluster.started"
    cluster_id: uuid.UUID
    spec: WorkflowSpec
    nodes: list[NodeInfo]
    topology: dict[str, Any] | None = None
    error: str | None = None
