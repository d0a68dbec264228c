"""Phase 3, recovery: a job that loses a node goes on without it.

On `nexus.node.lost` for a process of a running job, the job's next attempt is planned (in
the handler's transaction): an idle node of the cluster with the same role takes the lost
one's place, or else the job goes on with one worker fewer (down to `training.min_workers`).
When it cannot do without the lost role (its last parameter server, too few workers), it
waits for the node the cluster starts in the lost one's place (`nexus.node.joined`); a job
that went on with fewer workers takes that node in when it joins, back to full width.

Then, outside any transaction, the broken attempt's surviving ranks are cancelled (most have
already failed on the lost peer's closed connection), the next attempt's processes are
awaited idle, a new rendezvous is hosted if the old one's node was the one lost, and every
process gets its task for the next attempt. The ranks resume from the newest state one of
them holds in memory (every worker snapshots each epoch) or else the last checkpoint, so the
work lost is at most the epoch in progress.

Each job recovers at most `training.max_restarts` times. Its config records every recovery
(the node, why, what replaced it, how long until training went on, the epochs done again);
a loss that cannot be recovered from fails the job and phase 3. A job that waits for a
replacement that never comes is ended by phase 3's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.trainer.models import TrainingJob
from services.trainer.repository import TrainerRepository
from services.trainer.service.train import (
    job_tasks,
    newest_complete_checkpoint,
    send_train_tasks,
)
from services.trainer.state import TrainerContext
from shared.contracts import (
    NodeJoined,
    NodeLost,
    TrainArtifacts,
    TrainingFinished,
    TrainingProgress,
)
from shared.db import SYSTEM, UnitOfWork
from shared.node_tasks import TaskNotStarted, request_node_task
from shared.phases import fail_phase
from shared.spec import WorkflowSpec

logger = logging.getLogger(__name__)

# A survivor may still be ending the broken attempt's task (its collective failing, its
# report going out) when the next attempt is handed to it.
IDLE_POLL_S = 0.05
RECOVERING = "recovering"


@dataclass(frozen=True)
class Recovery:
    """The next attempt of a job, planned and committed; run by `run_recovery`."""

    job_id: uuid.UUID
    tenant_id: str
    attempt: int
    survivors: list[str]  # processes of the broken attempt still alive: to cancel
    members: list[str]  # the next attempt's nodes, by rank
    new_rendezvous: bool  # the node hosting the old one was lost


class Unrecoverable(Exception):
    """Why a job cannot go on after losing a node."""


class AwaitReplacement(Exception):
    """The job cannot go on without a node of this role; the cluster starts one in the lost
    node's place (`nexus.node.joined`), and the job goes on when it joins."""

    def __init__(self, role: str, why: str) -> None:
        super().__init__(why)
        self.role = role


async def plan_recoveries(uow: UnitOfWork, event: NodeLost) -> list[Recovery]:
    """For every unfinished job the lost node was a process of: its next attempt (the job
    marked `recovering`), a wait for the cluster's replacement node, or the job failed, with
    phase 3, when it cannot go on."""
    repository = TrainerRepository(uow.session, event.tenant_id)
    plans = []
    for job in await repository.unfinished_jobs_on(event.cluster_id):
        config = dict(job.config)
        config["spares"] = [s for s in config.get("spares", []) if s["node_id"] != event.node_id]
        members = config.get("members") or [{"node_id": job.node_id, "role": "worker"}]
        if event.node_id not in {m["node_id"] for m in members}:
            job.config = config  # a spare was lost: it can replace nobody now
            continue
        lost = f"node {event.node_id} ({event.role} rank {event.rank}) was lost during training"
        loss = {
            "lost_node": event.node_id,
            "role": event.role,
            "reason": event.reason,
            "detected_at": datetime.now(UTC).isoformat(),
            "last_epoch": await repository.last_epoch(job.id),
        }
        try:
            plan = _plan(job, config, event.node_id)
        except AwaitReplacement as wait:
            logger.warning("training job %s: %s; %s", job.id, lost, wait)
            config["recoveries"] = [*config.get("recoveries", []), {**loss, "waits_for": wait.role}]
            job.config = {**config, "awaiting": {"role": wait.role, "lost": event.node_id}}
            job.status = RECOVERING
            continue
        except Unrecoverable as exc:
            reason = f"{lost}: {event.reason}; {exc}"
            logger.warning("training job %s failed: %s", job.id, reason)
            await repository.finish_job(job, "failed", error=reason)
            details = {"job_id": str(job.id), "lost_node": event.node_id}
            await fail_phase(uow, 3, job.workflow_id, job.tenant_id, reason, details)
            continue
        config["recoveries"] = [*config.get("recoveries", []), loss]
        _commit_plan(job, config, plan)
        logger.warning(
            "training job %s: %s (%s); attempt %d", job.id, lost, event.reason, plan.attempt
        )
        plans.append(plan)
    return plans


async def plan_with_joined_node(uow: UnitOfWork, event: NodeJoined) -> list[Recovery]:
    """A node joined the cluster (a replacement): a job waiting for its role goes on with it
    in the lost node's place; any other unfinished job keeps it as a spare."""
    repository = TrainerRepository(uow.session, event.tenant_id)
    node = event.node
    plans = []
    for job in await repository.unfinished_jobs_on(event.cluster_id):
        config = dict(job.config)
        known = {m["node_id"] for m in [*config.get("members", []), *config.get("spares", [])]}
        if node.node_id in known:
            continue
        spare = {"node_id": node.node_id, "role": node.role, "host": node.host}
        config["spares"] = [*config.get("spares", []), spare]
        awaiting = config.get("awaiting")
        grown = _grow(job, config, node.role)
        if grown is not None:
            job.config = config
            _grow_back(job, grown)
            plans.append(grown)
            continue
        if job.status != RECOVERING or not awaiting or awaiting["role"] != node.role:
            job.config = config
            continue
        config["awaiting"] = None
        plan = _plan(job, config, awaiting["lost"])
        _commit_plan(job, config, plan)
        logger.info(
            "training job %s goes on with %s in place of %s", job.id, node.node_id, awaiting["lost"]
        )
        plans.append(plan)
    return plans


def _grow(job: TrainingJob, config: dict[str, Any], role: str) -> Recovery | None:
    """A `ddp` or parameter-server job that went on with fewer workers than it started with
    takes a joining one back in: a planned restart of its attempt, every rank (the new worker
    too, with its own data shard) resuming from the newest epoch held in memory. It does not
    count against `training.max_restarts` (the loss before it did)."""
    if config.get("strategy") == "single" or job.status != "running" or role != "worker":
        return None
    members: list[dict[str, Any]] = config["members"]
    workers = sum(1 for m in members if m["role"] == "worker")
    spare = next((s for s in config.get("spares", []) if s["role"] == role), None)
    if spare is None or workers >= config.get("workers_wanted", workers):
        return None
    return Recovery(
        job_id=job.id,
        tenant_id=job.tenant_id,
        attempt=config.get("attempt", 0) + 1,
        survivors=[m["node_id"] for m in members],
        members=[*(m["node_id"] for m in members), spare["node_id"]],
        new_rendezvous=False,
    )


def went_on(job: TrainingJob) -> Recovery | None:
    """The job's attempt started: it runs again, unless a replacement worker joined while the
    attempt was starting (kept as a spare then); the growth back it is taken in by, if so."""
    job.status = "running"
    grown = _grow(job, dict(job.config), "worker")
    if grown is not None:
        _grow_back(job, grown)
    return grown


def _grow_back(job: TrainingJob, grown: Recovery) -> None:
    joining = grown.members[-1]
    _commit_layout(
        job, dict(job.config), grown, restart=False, grown_back_with=joining, grown_at=grown.attempt
    )
    logger.info("training job %s takes %s back to full width", job.id, joining)


def _commit_plan(job: TrainingJob, config: dict[str, Any], plan: Recovery) -> None:
    """Record the next attempt's layout on the job, and what replaced the lost node."""
    members = {m["node_id"] for m in config["members"]}
    _commit_layout(
        job,
        config,
        plan,
        attempt=plan.attempt,
        replaced_by=next((m for m in plan.members if m not in members), None),
        processes=len(plan.members),
    )


def _commit_layout(
    job: TrainingJob, config: dict[str, Any], plan: Recovery, restart: bool = True, **noted: Any
) -> None:
    """The planned attempt's layout on the job, `noted` on its newest recovery record."""
    recoveries = list(config.get("recoveries", []))
    if recoveries:
        recoveries[-1] = {**recoveries[-1], **noted}
    job.config = {**config, **_next_layout(config, plan, restart), "recoveries": recoveries}
    job.status = RECOVERING
    job.node_id = job.config["members"][job.config.get("servers", 0)]["node_id"]


def _plan(job: TrainingJob, config: dict[str, Any], lost_id: str) -> Recovery:
    spec = WorkflowSpec.model_validate(config["spec"])
    training = spec.training
    restarts = config.get("restarts", 0)
    if restarts >= training.max_restarts:
        raise Unrecoverable(f"no restarts left (training.max_restarts is {training.max_restarts})")
    members: list[dict[str, Any]] = config["members"]
    lost = next(m for m in members if m["node_id"] == lost_id)
    survivors = [m for m in members if m["node_id"] != lost_id]
    spare = next((s for s in config.get("spares", []) if s["role"] == lost["role"]), None)
    if spare is not None:
        # In the lost one's place, so ranks keep their order and the data its shards.
        after = [spare if m is lost else m for m in members]
    elif lost["role"] == "parameter_server" and not any(
        m["role"] == "parameter_server" for m in survivors
    ):
        raise AwaitReplacement(lost["role"], "no parameter server is left: waiting for a new one")
    else:
        after = survivors
        workers = sum(1 for m in after if m["role"] == "worker")
        if workers < training.min_workers:
            raise AwaitReplacement(
                lost["role"],
                f"{workers} worker(s) left, fewer than training.min_workers "
                f"({training.min_workers}): waiting for a new one",
            )
    rendezvous = config.get("rendezvous") or {}
    return Recovery(
        job_id=job.id,
        tenant_id=job.tenant_id,
        attempt=config.get("attempt", 0) + 1,
        survivors=[m["node_id"] for m in survivors],
        members=[m["node_id"] for m in after],
        new_rendezvous=rendezvous.get("node_id") == lost_id,
    )


def _next_layout(config: dict[str, Any], plan: Recovery, restart: bool) -> dict[str, Any]:
    known = {m["node_id"]: m for m in [*config["members"], *config.get("spares", [])]}
    members = [known[node_id] for node_id in plan.members]
    return {
        "members": members,
        "servers": sum(1 for m in members if m["role"] == "parameter_server"),
        "spares": [s for s in config.get("spares", []) if s["node_id"] not in plan.members],
        "attempt": plan.attempt,
        "restarts": config.get("restarts", 0) + (1 if restart else 0),
    }


async def run_recovery(context: TrainerContext, plan: Recovery) -> None:
    """Start the planned attempt; if it cannot start, the job and phase 3 fail with why. A
    replacement worker that joined while this attempt was starting is taken in next."""
    try:
        await _stop_broken_attempt(context, plan)
        rendezvous = await _host_rendezvous(context, plan) if plan.new_rendezvous else None
        async with context.unit_of_work() as uow:
            job = await _current(uow, plan)
            if job is None:
                return
            artifacts = TrainArtifacts.model_validate(job.config["artifacts"])
            saved = await asyncio.to_thread(
                newest_complete_checkpoint, context.artifacts, artifacts
            )
            resume_from = saved or job.config.get("resume_from")
            if rendezvous is not None:
                job.config = {**job.config, "rendezvous": rendezvous}
            tasks = job_tasks(context, job, resume_from)
        error = await send_train_tasks(context, tasks)
    except (TaskNotStarted, TimeoutError) as exc:
        error = str(exc)
    grown: Recovery | None = None
    async with context.unit_of_work() as uow:
        job = await _current(uow, plan)
        if job is None:
            return
        if error is not None:
            reason = f"training could not go on after losing a node: {error}"
            repository = TrainerRepository(uow.session, job.tenant_id)
            await repository.finish_job(job, "failed", error=reason)
            details = {"job_id": str(job.id)}
            await fail_phase(uow, 3, job.workflow_id, job.tenant_id, reason, details)
            return
        grown = went_on(job)
    if grown is not None:
        await run_recovery(context, grown)


async def _current(uow: UnitOfWork, plan: Recovery) -> TrainingJob | None:
    """The job, locked, if this plan is still its next attempt (not failed or re-planned)."""
    job = await TrainerRepository(uow.session, plan.tenant_id).get_job(plan.job_id, for_update=True)
    if job is None or job.status != RECOVERING or job.config.get("attempt") != plan.attempt:
        return None
    return job


async def _stop_broken_attempt(context: TrainerContext, plan: Recovery) -> None:
    """Cancel what the broken attempt still runs, then wait (at most the collective timeout,
    which bounds any rank stuck in a collective) until every next-attempt node is idle."""
    nc, timeout = context.broker.connection, context.settings.node_task_accept_timeout_s
    job_id = str(plan.job_id)

    async def cancel(node_id: str) -> None:
        try:
            await request_node_task(nc, node_id, job_id, "cancel", {"task_id": job_id}, timeout)
        except TaskNotStarted:
            pass  # it ends on the lost peer anyway

    await asyncio.gather(*(cancel(n) for n in plan.survivors))
    deadline = time.monotonic() + context.settings.collective_timeout_s + timeout

    async def idle(node_id: str) -> None:
        while True:
            answer = await request_node_task(nc, node_id, job_id, "ping", {}, timeout)
            if answer.get("busy") is None:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node_id} is still busy with {answer['busy']}")
            await asyncio.sleep(IDLE_POLL_S)

    await asyncio.gather(*(idle(n) for n in plan.members))


async def _host_rendezvous(context: TrainerContext, plan: Recovery) -> dict[str, Any]:
    """The lost node hosted the job's rendezvous: the next attempt's first process hosts one."""
    host_id = plan.members[0]
    answer = await request_node_task(
        context.broker.connection,
        host_id,
        f"{plan.job_id}-rendezvous",
        "rendezvous",
        {},
        context.settings.node_task_accept_timeout_s,
    )
    if not answer.get("ok"):
        raise TaskNotStarted(f"node {host_id} could not host a rendezvous: {answer.get('error')}")
    return {"node_id": host_id, "host": answer["host"], "port": answer["port"], "backend": "gloo"}


async def may_be_a_lost_peer(uow: UnitOfWork, event: TrainingFinished) -> bool:
    """A rank of a multi-process job failed while its job could still recover: the failure
    may be its peer's loss (the collective broke on the closed connection), which the
    cluster announces a moment later, so the caller waits that moment before judging. Only
    asked of a failure."""
    job = await TrainerRepository(uow.session, SYSTEM).get_job(event.job_id)
    if job is None or job.tenant_id != event.tenant_id or job.status != "running":
        return False
    config = job.config
    restarts_left = config.get("restarts", 0) < config["spec"]["training"].get("max_restarts", 0)
    current = event.attempt == config.get("attempt", 0)
    return current and restarts_left and len(config.get("members", [])) > 1


async def note_resumed(uow: UnitOfWork, event: TrainingProgress) -> None:
    """The first epoch of a recovered attempt: record how long the job stood still and how
    many epochs it did again."""
    if not event.attempt:
        return
    repository = TrainerRepository(uow.session, SYSTEM)
    job = await repository.get_job(event.job_id, for_update=True)
    if job is None or job.tenant_id != event.tenant_id:
        return
    recoveries = list(job.config.get("recoveries", []))
    # Its own attempt, or a growth back to full width planned before that one reported.
    if not recoveries or event.attempt not in (
        recoveries[-1]["attempt"],
        recoveries[-1].get("grown_at"),
    ):
        return
    last = dict(recoveries[-1])
    if "resumed_epoch" in last:
        return
    detected = datetime.fromisoformat(last["detected_at"])
    last["resumed_epoch"] = event.epoch - 1
    last["epochs_redone"] = max((last.get("last_epoch") or 0) - (event.epoch - 1), 0)
    # Until the first epoch of the new attempt was done: the recovery plus one epoch.
    last["seconds_to_next_epoch"] = round((datetime.now(UTC) - detected).total_seconds(), 3)
    job.config = {**job.config, "recoveries": [*recoveries[:-1], last]}
