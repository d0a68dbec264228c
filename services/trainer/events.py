"""The trainer's event consumers: durable pull subscribers on the NEXUS stream."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.trainer import configure, train_dispatch, train_outcome
from shared.bus import durable_subscriber
from shared.events import ClusterNodesReady, Phase2Completed, TrainingFinished, TrainingProgress
from shared.service_app import ServiceContext


def create_event_router(context: ServiceContext) -> NatsRouter:
    router = NatsRouter()

    @durable_subscriber(router, ClusterNodesReady, configure.CONSUMER)
    async def design_network(event: ClusterNodesReady) -> None:
        await configure.on_nodes_ready(context, event)

    @durable_subscriber(router, Phase2Completed, train_dispatch.CONSUMER)
    async def start_training(event: Phase2Completed) -> None:
        await train_dispatch.on_phase2_completed(context, event)

    @durable_subscriber(router, TrainingProgress, train_outcome.PROGRESS_CONSUMER)
    async def record_progress(event: TrainingProgress) -> None:
        await train_outcome.on_training_progress(context, event)

    @durable_subscriber(router, TrainingFinished, train_outcome.FINISHED_CONSUMER)
    async def finish_training(event: TrainingFinished) -> None:
        await train_outcome.on_training_finished(context, event)

    return router
