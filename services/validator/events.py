"""The validator's event consumers: phase 3 completed -> start a validation; the validator
node's report -> gates, report and the phase 4 outcome."""

from __future__ import annotations

import logging

from faststream.nats import NatsRouter
from pydantic import ValidationError

from services.validator.conclude import conclude
from services.validator.repository import ValidationRepository
from services.validator.service import gates_of, launch, phase_failed
from shared.bus import durable_subscriber
from shared.events import Phase3Completed, ValidationFinished
from shared.service_app import ServiceContext

logger = logging.getLogger(__name__)

PHASE3_CONSUMER = "validator-phase3"
RESULTS_CONSUMER = "validator-results"


def create_event_router(context: ServiceContext) -> NatsRouter:
    router = NatsRouter()

    @durable_subscriber(router, Phase3Completed, PHASE3_CONSUMER)
    async def on_phase3_completed(event: Phase3Completed) -> None:
        async with context.unit_of_work() as uow:
            if not await uow.first_time(PHASE3_CONSUMER, event.event_id):
                return
            repository = ValidationRepository(uow.session, None)
            try:
                _, gates = gates_of(event.spec)
                spec_error = None
            except ValidationError as exc:
                gates, spec_error = {}, f"invalid workflow spec: {exc.errors()[0]['msg']}"
            validation = await repository.create(
                tenant_id=event.tenant_id,
                workflow_id=event.workflow_id,
                cluster_id=event.cluster_id,
                trigger="phase",
                model_uri=event.model_uri,
                spec=event.spec,
                gates=gates,
            )
            if spec_error is not None:
                await repository.finish(validation, "error", error=spec_error)
                await uow.emit(phase_failed(validation, spec_error))
                return
        # Committed: the node's report will find the row, however fast it comes.
        await launch(context, validation, event.nodes)

    @durable_subscriber(router, ValidationFinished, RESULTS_CONSUMER)
    async def on_validation_finished(event: ValidationFinished) -> None:
        async with context.unit_of_work() as uow:
            if not await uow.first_time(RESULTS_CONSUMER, event.event_id):
                return
            await conclude(context, uow, event)

    return router
