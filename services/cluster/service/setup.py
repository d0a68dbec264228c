"""Phase 1 (setup): create the workflow, its phases and its cluster, scaffold the project's
configs, and emit phase 1's memory keys and `Phase1Completed`, all in the caller's unit of
work, so a failure anywhere leaves nothing stored and nothing published."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from services.cluster.models import Workflow, WorkflowPhase
from services.cluster.repository import ClusterRepository, WorkflowRepository
from services.cluster.service.dataset_record import dataset_config
from services.cluster.service.status import (
    record_phase_completed,
    record_phase_failed,
    record_phase_started,
)
from shared.artifacts import ArtifactStore
from shared.contracts import Event, MemoryWritten, Phase1Completed, TrainingProgress
from shared.db import UnitOfWork
from shared.errors import Unprocessable, describe_validation_errors
from shared.phases import fail_phase
from shared.project_layout import MemoryKey, ProjectFile
from shared.spec import RetryRequest, WorkflowSpec
from shared.subjects import NODE_HEARTBEAT_SUBJECT


async def set_up_workflow(
    uow: UnitOfWork,
    artifacts: ArtifactStore,
    tenant_id: str,
    spec: WorkflowSpec,
    workflow_id: uuid.UUID,
    *,
    heartbeat_interval_s: float,
) -> tuple[Workflow, dict[int, WorkflowPhase]]:
    spec_json = spec.model_dump(mode="json")
    workflow, phases = await WorkflowRepository(uow.session, tenant_id).create(
        workflow_id, tenant_id, spec.name, spec_json
    )
    record_phase_started(workflow, phases[1])
    cluster_id = uuid.uuid4()
    layout = spec.cluster.model_dump(mode="json")
    await ClusterRepository(uow.session, tenant_id).create(
        cluster_id, tenant_id, workflow_id, layout
    )
    files = await asyncio.to_thread(
        scaffold_project, artifacts, tenant_id, workflow_id, spec, heartbeat_interval_s
    )
    record_phase_completed(workflow, phases, 1, {"cluster_id": str(cluster_id), "files": files})
    await uow.emit(
        MemoryWritten(
            workflow_id=workflow_id,
            tenant_id=tenant_id,
            keys={
                MemoryKey.CLUSTER_ID: str(cluster_id),
                MemoryKey.CONFIG: spec_json,
                MemoryKey.PHASE1_COMPLETE: {
                    "completed_at": datetime.now(UTC).isoformat(),
                    "cluster_id": str(cluster_id),
                    "files": files,
                },
            },
        )
    )
    await uow.emit(
        Phase1Completed(
            workflow_id=workflow_id, tenant_id=tenant_id, cluster_id=cluster_id, spec=spec
        )
    )
    return workflow, phases


async def record_refused_workflow(
    uow: UnitOfWork, tenant_id: str, workflow_id: uuid.UUID, spec: dict[str, Any], reason: str
) -> None:
    """A `workflow.requested` whose token or spec was refused: keep a failed workflow so the
    requester can see why, and report the failure of phase 1."""
    name = spec.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        name = "refused-request"
    workflow, phases = await WorkflowRepository(uow.session, tenant_id).create(
        workflow_id, tenant_id, name, spec
    )
    record_phase_failed(workflow, phases, 1, reason)
    await fail_phase(uow, 1, workflow_id, tenant_id, reason)


def scaffold_project(
    store: ArtifactStore,
    tenant_id: str,
    workflow_id: uuid.UUID,
    spec: WorkflowSpec,
    heartbeat_interval_s: float,
) -> list[str]:
    """Write phase 1's configs (blocking: run it in a thread). Returns their project paths."""
    contents: dict[ProjectFile, dict[str, Any]] = {
        # The spec's training section, as the generated train.py reads it.
        ProjectFile.TRAINING_CONFIG: spec.training.model_dump(mode="json"),
        ProjectFile.DATASET_CONFIG: dataset_config(spec),
        ProjectFile.MONITORING_CONFIG: {
            "progress_subject": TrainingProgress.subject,
            "epoch_metrics": sorted(
                set(TrainingProgress.model_fields) - set(Event.model_fields) - {"job_id"}
            ),
            "heartbeat_subject": NODE_HEARTBEAT_SUBJECT,
            "heartbeat_interval_s": heartbeat_interval_s,
            "checkpoint_every": spec.training.checkpoint_every,
            "early_stopping_patience": spec.training.patience,
            "gates": spec.gates.model_dump(mode="json"),
            "nodes": spec.cluster.model_dump(mode="json"),
        },
    }
    for path, content in contents.items():
        url = store.workflow_url(tenant_id, workflow_id, path)
        store.write_text(url, json.dumps(content, indent=2) + "\n")
    return [str(path) for path in contents]


TRAINING_PHASE = 3


def retry_spec(
    failed: Workflow, phases: dict[int, WorkflowPhase], changes: RetryRequest
) -> WorkflowSpec:
    """The spec of a failed workflow's retry: the same, with the changes, its training
    resuming from the failed run's checkpoints once it had trained (else from where the
    failed run itself resumed). A change that makes the spec invalid is a 422."""
    done = (failed.progress or {}).get("epoch") or 0
    epochs = changes.training.epochs
    if epochs is not None and epochs < done:
        raise Unprocessable(
            [
                {
                    "field": "training.epochs",
                    "message": f"{epochs} is fewer than the {done} epochs the failed run trained",
                }
            ]
        )
    spec = copy.deepcopy(failed.spec)
    training = spec.setdefault("training", {})
    training.update(changes.training.model_dump(exclude_none=True))
    if phases[TRAINING_PHASE].status != "pending":
        training["resume_from"] = str(failed.id)
    try:
        return WorkflowSpec.model_validate(spec)
    except ValidationError as exc:
        raise Unprocessable(describe_validation_errors([dict(e) for e in exc.errors()])) from exc
