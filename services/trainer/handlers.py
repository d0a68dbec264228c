"""NATS handlers of the trainer: phase 2 from the cluster's start, phase 3 from phase 2's
completion, and the worker's progress and end. Each owns its transaction (through the
shared phase runner) and calls `service/`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from faststream.nats import NatsRouter

from services.trainer.service import outcome, recovery, train
from services.trainer.service.configure import configure_workflow
from services.trainer.state import TrainerContext
from shared.bus import durable_subscriber
from shared.contracts import (
    ClusterStarted,
    NodeJoined,
    NodeLost,
    Phase2Completed,
    PhaseFailed,
    TrainingFinished,
    TrainingProgress,
    TrainTask,
)
from shared.db import UnitOfWork
from shared.phases import run_phase_step

CONFIGURE = "trainer-configure"
TRAIN = "trainer-train"
PROGRESS = "trainer-progress"
FINISHED = "trainer-finished"
NODE_LOST = "trainer-node-lost"
PHASE3_FAILED = "trainer-phase3-failed"
NODE_JOINED = "trainer-node-joined"

E = TypeVar("E", NodeLost, NodeJoined)
Planner = Callable[[UnitOfWork, E], Awaitable[list[recovery.Recovery]]]


def create_handlers(context: TrainerContext) -> NatsRouter:
    router = NatsRouter()

    @durable_subscriber(router, ClusterStarted, CONFIGURE)
    async def on_cluster_started(event: ClusterStarted) -> None:
        async def step(uow: UnitOfWork) -> None:
            await configure_workflow(context.artifacts, uow, event)

        await run_phase_step(context, event, CONFIGURE, 2, step)

    @durable_subscriber(router, Phase2Completed, TRAIN)
    async def on_phase2_completed(event: Phase2Completed) -> None:
        async def step(uow: UnitOfWork) -> list[tuple[TrainTask, str]]:
            return await train.create_job(context, uow, event)

        tasks = await run_phase_step(context, event, TRAIN, 3, step)
        if tasks is None:
            return
        error = await train.send_train_tasks(context, tasks)
        async with context.unit_of_work() as uow:
            await train.record_dispatch(uow, tasks, error)

    @durable_subscriber(router, TrainingProgress, PROGRESS)
    async def on_training_progress(event: TrainingProgress) -> None:
        async with context.unit_of_work() as uow:
            if await uow.first_time(PROGRESS, event.event_id):
                await outcome.record_progress(uow, event)
                await recovery.note_resumed(uow, event)

    @durable_subscriber(router, TrainingFinished, FINISHED)
    async def on_training_finished(event: TrainingFinished) -> None:
        wait = False
        if not event.succeeded:  # only a failure may be a lost peer's; no read for the rest
            async with context.unit_of_work() as uow:
                wait = await recovery.may_be_a_lost_peer(uow, event)
        if wait:  # then the failure is judged: ignored if the job recovered meanwhile
            await asyncio.sleep(context.settings.loss_detection_s)

        async def step(uow: UnitOfWork) -> None:
            await outcome.finish_training(context, uow, event)

        async def record_failure(uow: UnitOfWork, reason: str) -> None:
            await outcome.record_failure(uow, event, reason)

        await run_phase_step(context, event, FINISHED, 3, step, record_failure)

    async def plan_then_recover(consumer: str, event: E, plan: Planner[E]) -> None:
        """Plan the recoveries an event calls for in one transaction, then run them: once
        committed, a redelivery finds the event handled and plans nothing twice."""
        async with context.unit_of_work() as uow:
            if not await uow.first_time(consumer, event.event_id):
                return
            plans = await plan(uow, event)
        for planned in plans:
            await recovery.run_recovery(context, planned)

    @durable_subscriber(router, NodeLost, NODE_LOST)
    async def on_node_lost(event: NodeLost) -> None:
        await plan_then_recover(NODE_LOST, event, recovery.plan_recoveries)

    @durable_subscriber(router, PhaseFailed, PHASE3_FAILED, subject="nexus.phase3.failed")
    async def on_phase3_failed(event: PhaseFailed) -> None:
        async with context.unit_of_work() as uow:
            if await uow.first_time(PHASE3_FAILED, event.event_id):
                await outcome.close_jobs_of_failed_phase(uow, event)

    @durable_subscriber(router, NodeJoined, NODE_JOINED)
    async def on_node_joined(event: NodeJoined) -> None:
        await plan_then_recover(NODE_JOINED, event, recovery.plan_with_joined_node)

    return router
