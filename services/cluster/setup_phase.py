"""Phase 1 (setup): create the workflow, its phases and its cluster, scaffold the project's
configs, write the phase-1 memory keys and emit `Phase1Completed`, all in the caller's unit
of work, so a failure anywhere leaves nothing stored."""

from __future__ import annotations

import asyncio
import inspect
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx

from services.cluster.cluster_repository import ClusterRepository
from services.cluster.models import Workflow, WorkflowPhase
from services.cluster.workflow_repository import WorkflowRepository
from services.cluster.workflow_status import complete_phase, fail_phase, start_phase
from shared.artifacts import ArtifactStore
from shared.db import UnitOfWork
from shared.errors import Unavailable
from shared.events import Event, Phase1Completed, PhaseFailed, TrainingProgress
from shared.memory_client import MemoryClient
from shared.spec import WorkflowSpec
from shared.subjects import HEARTBEAT_INTERVAL_S, NODE_HEARTBEAT_SUBJECT

CONFIG_FILES = (
    "neural/configs/training.json",
    "neural/configs/dataset.json",
    "neural/configs/monitoring.json",
)


async def set_up_workflow(
    uow: UnitOfWork,
    memory: MemoryClient,
    artifacts: ArtifactStore,
    tenant_id: str,
    spec: WorkflowSpec,
    workflow_id: uuid.UUID,
) -> tuple[Workflow, dict[int, WorkflowPhase]]:
    spec_json = spec.model_dump(mode="json")
    workflow, phases = await WorkflowRepository(uow.session, tenant_id).create(
        workflow_id, spec.name, spec_json
    )
    start_phase(workflow, phases[1])
    cluster_id = uuid.uuid4()
    layout = spec.cluster.model_dump(mode="json")
    await ClusterRepository(uow.session).create(cluster_id, tenant_id, workflow_id, layout)
    files = await asyncio.to_thread(scaffold_project, artifacts, tenant_id, workflow_id, spec)
    completed_at = datetime.now(UTC).isoformat()
    try:
        await memory.put_many(
            tenant_id,
            str(workflow_id),
            {
                "neural/cluster-id": str(cluster_id),
                "neural/config": spec_json,
                "neural/phase1-complete": {
                    "completed_at": completed_at,
                    "cluster_id": str(cluster_id),
                    "files": files,
                },
            },
        )
    except httpx.HTTPError as exc:
        # Nothing is committed: the unit of work rolls back and the caller may retry.
        raise Unavailable(f"memory service unavailable: {exc}") from exc
    complete_phase(workflow, phases, 1, {"cluster_id": str(cluster_id), "files": files})
    await uow.emit(
        Phase1Completed(
            workflow_id=workflow_id, tenant_id=tenant_id, cluster_id=cluster_id, spec=spec_json
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
        workflow_id, name, spec
    )
    fail_phase(workflow, phases, 1, reason)
    await uow.emit(
        PhaseFailed(workflow_id=workflow_id, tenant_id=tenant_id, phase=1, reason=reason)
    )


def scaffold_project(
    store: ArtifactStore, tenant_id: str, workflow_id: uuid.UUID, spec: WorkflowSpec
) -> list[str]:
    """Write phase 1's configs (blocking: run it in a thread). Returns their project paths."""
    # Imported here: it loads scikit-learn, which only setting up a workflow needs.
    from shared.ml.data import describe_dataset, load_splits

    split_defaults = inspect.signature(load_splits).parameters
    contents: dict[str, dict[str, Any]] = {
        # The spec's training section, as the generated train.py reads it.
        CONFIG_FILES[0]: spec.training.model_dump(mode="json"),
        CONFIG_FILES[1]: {
            **describe_dataset(spec.dataset),
            "split_seed": spec.training.seed,
            "val_fraction": split_defaults["val_fraction"].default,
            "test_fraction": split_defaults["test_fraction"].default,
        },
        CONFIG_FILES[2]: {
            "progress_subject": TrainingProgress.subject,
            "epoch_metrics": sorted(
                set(TrainingProgress.model_fields) - set(Event.model_fields) - {"job_id"}
            ),
            "heartbeat_subject": NODE_HEARTBEAT_SUBJECT,
            "heartbeat_interval_s": HEARTBEAT_INTERVAL_S,
            "checkpoint_every": spec.training.checkpoint_every,
            "early_stopping_patience": spec.training.patience,
            "gates": spec.gates.model_dump(mode="json"),
            "nodes": spec.cluster.model_dump(mode="json"),
        },
    }
    for path, content in contents.items():
        url = store.workflow_url(tenant_id, workflow_id, path)
        store.write_text(url, json.dumps(content, indent=2) + "\n")
    return list(contents)
