"""Event contracts: every message that advances a workflow, as a pydantic model, and the
typed payloads and results of node tasks. Split by concern; import from here.

A class's `subject` is where it is published. Subjects under `nexus.` are captured by the
JetStream stream `NEXUS`; consumers are durable and idempotent on `event_id`.
"""

from shared.contracts.base import PHASE_NAMES, SCHEMA_VERSION, Event, subject_of
from shared.contracts.bus import EventDeadLettered
from shared.contracts.memory import MemoryWritten
from shared.contracts.nodes import (
    ClusterStarted,
    NodeInfo,
    NodeJoined,
    NodeLost,
    NodeRegistered,
    NodeRole,
    Rendezvous,
)
from shared.contracts.tasks import TaskFinished
from shared.contracts.training import (
    EpochReport,
    JobPlacement,
    TrainArtifacts,
    TrainingFinished,
    TrainingProgress,
    TrainResult,
    TrainTask,
    node_totals,
)
from shared.contracts.validation import (
    Latency,
    SuiteCheck,
    TestMetrics,
    Throughput,
    ValidateTask,
    ValidationFinished,
    ValidationResult,
)
from shared.contracts.workflow import (
    Phase1Completed,
    Phase2Completed,
    Phase3Completed,
    Phase4Passed,
    Phase5Completed,
    PhaseFailed,
    WorkflowRequested,
)

__all__ = [
    "PHASE_NAMES",
    "SCHEMA_VERSION",
    "ClusterStarted",
    "EpochReport",
    "Event",
    "EventDeadLettered",
    "Latency",
    "MemoryWritten",
    "NodeInfo",
    "NodeJoined",
    "NodeLost",
    "Rendezvous",
    "JobPlacement",
    "node_totals",
    "NodeRegistered",
    "NodeRole",
    "Phase1Completed",
    "Phase2Completed",
    "Phase3Completed",
    "Phase4Passed",
    "Phase5Completed",
    "PhaseFailed",
    "SuiteCheck",
    "TaskFinished",
    "TestMetrics",
    "Throughput",
    "TrainArtifacts",
    "TrainResult",
    "TrainTask",
    "TrainingFinished",
    "TrainingProgress",
    "ValidateTask",
    "ValidationFinished",
    "ValidationResult",
    "WorkflowRequested",
    "subject_of",
]
