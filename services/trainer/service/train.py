"""Phase 3, start: create the training job and hand a `train` task to every process of it:
worker rank 0 alone (`single`), every worker (`ddp`), or every parameter server and every
worker (`parameter_server`), each with its rank and the cluster's rendezvous.

The job is committed before the tasks are sent, so the lead's first progress event always
finds its row; the task requests happen outside any transaction (they may wait seconds)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from services.trainer.models import TrainingJob
from services.trainer.repository import TrainerRepository
from services.trainer.service.design import job_members
from services.trainer.state import TrainerContext
from shared.artifacts import ArtifactStore
from shared.contracts import (
    JobPlacement,
    MemoryWritten,
    NodeInfo,
    Phase2Completed,
    Rendezvous,
    TrainArtifacts,
    TrainingProgress,
    TrainTask,
)
from shared.db import UnitOfWork
from shared.ml.files import CHECKPOINT_FILES
from shared.node_tasks import TaskNotStarted, send_node_task
from shared.phases import PhaseError, fail_phase
from shared.project_layout import MemoryKey
from shared.service_app import AnyContext
from shared.spec import WorkflowSpec

logger = logging.getLogger(__name__)


async def create_job(
    context: TrainerContext, uow: UnitOfWork, event: Phase2Completed
) -> list[tuple[TrainTask, str]]:
    """The job's row and its tasks, by rank, with their nodes (sent once this unit commits).
    The lead (the first worker) reports progress and the result; the row names its node.
    Everything a task is built from is kept in the row's config, so a recovery can build the
    next attempt's tasks from it."""
    members, servers = job_members(event.spec, event.nodes)
    if not members[servers:]:
        raise PhaseError("no worker node in the cluster to train on")
    strategy = event.spec.training.strategy
    if strategy != "single" and event.rendezvous is None:
        raise PhaseError(f"strategy {strategy} needs the cluster's rendezvous; it has none")
    job_id = uuid.uuid4()
    artifacts = TrainArtifacts.for_workflow(context.artifacts, event.tenant_id, event.workflow_id)
    resume_from = await _checkpoint_to_resume(context, event)
    in_job = {m.node_id for m in members}
    lead = members[servers]
    job = await TrainerRepository(uow.session, event.tenant_id).create_job(
        job_id,
        event.workflow_id,
        event.cluster_id,
        lead.node_id,
        config={
            "spec": event.spec.model_dump(mode="json"),
            "architecture": event.architecture,
            "artifacts": artifacts.model_dump(),
            "strategy": strategy,
            "members": [_member(m) for m in members],
            "servers": servers,
            # The width a job that lost workers grows back to when replacements join.
            "workers_wanted": len(members) - servers,
            # Idle nodes of the cluster a recovery can put in a lost node's place.
            "spares": [_member(n) for n in event.nodes if n.node_id not in in_job],
            "rendezvous": event.rendezvous.model_dump() if event.rendezvous else None,
            "attempt": 0,
            "restarts": 0,
            "recoveries": [],
            # A retry's starting point: the newest checkpoint of the workflow it retries.
            "resume_from": resume_from,
        },
    )
    # How to follow the job while it trains; written again when the phase completes.
    follow = monitoring(
        context.settings.trainer_url, job_id, lead.node_id, event.spec.training.epochs
    )
    await uow.emit(
        MemoryWritten(
            workflow_id=event.workflow_id,
            tenant_id=event.tenant_id,
            keys={MemoryKey.TRAINING_JOB_ID: str(job_id), MemoryKey.MONITORING: follow},
        )
    )
    return job_tasks(context, job, resume_from)


async def _checkpoint_to_resume(context: TrainerContext, event: Phase2Completed) -> str | None:
    """The newest checkpoint of the earlier workflow `training.resume_from` names: the
    tenant's own, since its folder is under the tenant's."""
    earlier = event.spec.training.resume_from
    if earlier is None:
        return None
    artifacts = TrainArtifacts.for_workflow(context.artifacts, event.tenant_id, earlier)
    found = await asyncio.to_thread(newest_complete_checkpoint, context.artifacts, artifacts)
    if found is None:
        raise PhaseError(
            f"training.resume_from: workflow {earlier} has no checkpoint to go on from"
        )
    return found


def newest_complete_checkpoint(store: ArtifactStore, artifacts: TrainArtifacts) -> str | None:
    """The newest checkpoint a workflow saved whole (a newer snapshot in a surviving rank's
    memory wins over it on the nodes)."""
    epochs: dict[str, set[str]] = {}
    for path in store.list_files(artifacts.checkpoints):
        folder, _, name = path.partition("/")
        epochs.setdefault(folder, set()).add(name)
    complete = sorted(f for f, names in epochs.items() if set(CHECKPOINT_FILES) <= names)
    if not complete:
        return None
    return f"{artifacts.checkpoints.rstrip('/')}/{complete[-1]}"


def _member(node: NodeInfo) -> dict[str, Any]:
    return {"node_id": node.node_id, "role": node.role, "host": node.host}


def job_tasks(
    context: TrainerContext, job: TrainingJob, resume_from: str | None = None
) -> list[tuple[TrainTask, str]]:
    """The current attempt's task for every process of the job, with its node."""
    config = job.config
    members: list[dict[str, Any]] = config["members"]
    servers: int = config.get("servers", 0)
    rendezvous = Rendezvous.model_validate(config["rendezvous"]) if config["rendezvous"] else None
    ids = [m["node_id"] for m in members]
    # A worker's GPU is its turn among the job's workers on the same host.
    local_ranks = [
        sum(1 for w in members[servers:rank] if w.get("host") == m.get("host"))
        for rank, m in enumerate(members)
    ]

    def task_for(rank: int) -> TrainTask:
        placement = None
        if config["strategy"] != "single":
            assert rendezvous is not None, "checked when the job was created"
            placement = JobPlacement(
                rank=rank,
                members=ids,
                servers=servers,
                local_rank=local_ranks[rank],
                rendezvous=rendezvous,
                timeout_s=context.settings.collective_timeout_s,
            )
        return TrainTask(
            job_id=job.id,
            workflow_id=job.workflow_id,
            tenant_id=job.tenant_id,
            cluster_id=job.cluster_id,
            spec=WorkflowSpec.model_validate(config["spec"]),
            architecture=config["architecture"],
            artifacts=TrainArtifacts.model_validate(config["artifacts"]),
            placement=placement,
            attempt=config.get("attempt", 0),
            resume_from=resume_from,
        )

    return [(task_for(rank), node_id) for rank, node_id in enumerate(ids)]


# How much later than training's deadline the node stops a train task by itself.
NODE_DEADLINE_MARGIN_S = 30.0


async def send_train_tasks(context: AnyContext, tasks: list[tuple[TrainTask, str]]) -> str | None:
    """Hand every process its task at once (they meet at the rendezvous); None once all
    accepted, else why the job did not start, after cancelling the ranks that had accepted."""

    async def send(task: TrainTask, node_id: str) -> str | None:
        try:
            # Past the phase's own deadline, which the cluster service enforces: a backstop
            # for when no service is there to stop the task.
            spec_deadline = task.spec.training.deadline_s
            deadline = (
                spec_deadline + NODE_DEADLINE_MARGIN_S
                if spec_deadline
                else context.settings.training_task_deadline_s
            )
            payload = task.model_dump(mode="json")
            await send_node_task(context, node_id, str(task.job_id), "train", payload, deadline)
        except TaskNotStarted as exc:
            return str(exc)
        return None

    errors = await asyncio.gather(*(send(task, node_id) for task, node_id in tasks))
    refused = [error for error in errors if error is not None]
    if not refused:
        return None
    accepted = [node_id for (_, node_id), error in zip(tasks, errors, strict=True) if not error]
    job_id = str(tasks[0][0].job_id)
    for node_id in accepted:
        try:
            await send_node_task(context, node_id, job_id, "cancel", {"task_id": job_id})
        except TaskNotStarted as exc:  # it fails at the rendezvous timeout anyway
            logger.warning("could not cancel rank on %s: %s", node_id, exc)
    return "; ".join(refused)


async def record_dispatch(
    uow: UnitOfWork, tasks: list[tuple[TrainTask, str]], error: str | None
) -> None:
    task = tasks[0][0]
    repository = TrainerRepository(uow.session, task.tenant_id)
    if error is None:
        await repository.mark_started(task.job_id)
        return
    logger.warning("training job %s not started: %s", task.job_id, error)
    await repository.mark_dispatch_failed(task.job_id, error)
    await fail_phase(
        uow,
        3,
        task.workflow_id,
        task.tenant_id,
        f"training could not start: {error}",
        {"job_id": str(task.job_id), "nodes": [n for _, n in tasks]},
    )


def monitoring(
    trainer_url: str,
    job_id: uuid.UUID,
    node_id: str | None,
    epochs: int,
    wall_seconds: float | None = None,
) -> dict[str, Any]:
    """How to follow a job: its HTTP metrics, the progress subject, and how long it took."""
    base = trainer_url.rstrip("/")
    return {
        "job_id": str(job_id),
        "node_id": node_id,
        "job_url": f"{base}/jobs/{job_id}",
        "metrics_url": f"{base}/jobs/{job_id}/metrics",
        "progress_subject": TrainingProgress.subject,
        "epochs": epochs,
        "wall_seconds": wall_seconds,
    }
