"""NATS handlers of the validator: phase 3's completion starts phase 4's validation; the
validator node's report concludes it. Each owns its transaction and calls `service/`."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.validator.models import Validation
from services.validator.service import validate
from services.validator.service.conclude import conclude
from services.validator.state import ValidatorContext
from shared.bus import durable_subscriber
from shared.contracts import NodeLost, Phase3Completed, PhaseFailed, ValidationFinished
from shared.db import UnitOfWork
from shared.phases import run_phase_step

START = "validator-phase3"
RESULTS = "validator-results"
NODE_LOST = "validator-node-lost"
PHASE4_FAILED = "validator-phase4-failed"


def create_handlers(context: ValidatorContext) -> NatsRouter:
    router = NatsRouter()

    @durable_subscriber(router, Phase3Completed, START)
    async def on_phase3_completed(event: Phase3Completed) -> None:
        async def step(uow: UnitOfWork) -> Validation:
            return await validate.create_for_phase(uow, event)

        validation = await run_phase_step(context, event, START, validate.PHASE, step)
        if validation is None:
            return
        # Committed: the node's report will find the row, however fast it comes.
        node_id, error = await validate.send_validate_task(context, validation)
        async with context.unit_of_work() as uow:
            await validate.record_dispatch(uow, validation.id, node_id, error)

    @durable_subscriber(router, ValidationFinished, RESULTS)
    async def on_validation_finished(event: ValidationFinished) -> None:
        async with context.unit_of_work() as uow:
            if await uow.first_time(RESULTS, event.event_id):
                await conclude(context, uow, event)

    @durable_subscriber(router, NodeLost, NODE_LOST)
    async def on_node_lost(event: NodeLost) -> None:
        async with context.unit_of_work() as uow:
            if not await uow.first_time(NODE_LOST, event.event_id):
                return
            reopened = await validate.reopen_validations_on_lost_node(uow, event)
        for validation in reopened:  # committed: the new node's report will find the row
            await validate.redispatch(context, validation, event)

    @durable_subscriber(router, PhaseFailed, PHASE4_FAILED, subject="nexus.phase4.failed")
    async def on_phase4_failed(event: PhaseFailed) -> None:
        async with context.unit_of_work() as uow:
            if await uow.first_time(PHASE4_FAILED, event.event_id):
                await validate.close_validations_of_failed_phase(uow, event)

    return router
