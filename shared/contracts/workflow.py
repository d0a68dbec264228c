"""The events that move a workflow from phase to phase, and the one that fails it.

Every phase event carries the `WorkflowSpec` phase 1 validated, typed, so no consumer parses
it again; a message whose spec does not validate is not a Nexus event and is rejected.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from pydantic import Field

from shared.contracts.base import Event
from shared.contracts.nodes import NodeInfo, Rendezvous
from shared.spec import WorkflowSpec


class WorkflowRequested(Event):
    """Published by any system to start a workflow. The token is the caller's bearer JWT or
    API key; tenant_id is taken from the token, not trusted from the payload. The spec stays
    a plain object here: phase 1 validates it and records why when it is refused."""

    subject: ClassVar[str] = "nexus.workflow.requested"
    tenant_id: str = ""
    spec: dict[str, Any]
    auth_token: str


class Phase1Completed(Event):
    """Phase 1 set the workflow up; the cluster service starts its nodes on it."""

    subject: ClassVar[str] = "nexus.phase1.completed"
    cluster_id: uuid.UUID
    spec: WorkflowSpec


class Phase2Completed(Event):
    """The trainer designed the network on a connected cluster; phase 3 starts on it."""

    subject: ClassVar[str] = "nexus.phase2.completed"
    cluster_id: uuid.UUID
    nodes: list[NodeInfo]
    architecture: dict[str, Any]
    spec: WorkflowSpec
    # The phase-2 gate as measured: architecture, node count, topology.
    gates: dict[str, Any] = Field(default_factory=dict)
    # Where a multi-process job's ranks meet (None when the topology named none).
    rendezvous: Rendezvous | None = None


class Phase3Completed(Event):
    subject: ClassVar[str] = "nexus.phase3.completed"
    job_id: uuid.UUID
    model_uri: str
    metrics: dict[str, Any]
    spec: WorkflowSpec
    cluster_id: uuid.UUID


class Phase4Passed(Event):
    subject: ClassVar[str] = "nexus.phase4.passed"
    validation_id: uuid.UUID
    model_uri: str
    metrics: dict[str, Any]
    spec: WorkflowSpec


class Phase5Completed(Event):
    subject: ClassVar[str] = "nexus.phase5.completed"
    deployment_id: uuid.UUID
    model_id: uuid.UUID
    served_url: str


class PhaseFailed(Event):
    """Published on `nexus.phase{phase}.failed` by the phase's owner (see shared.phases)."""

    subject: ClassVar[str] = "nexus.phase.failed"
    phase: int = Field(ge=1, le=5)
    reason: str
    details: dict[str, Any] = Field(default_factory=dict)

    def published_subject(self) -> str:
        return f"nexus.phase{self.phase}.failed"
