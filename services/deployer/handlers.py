"""NATS handlers of the deployer: phase 4 passed -> phase 5 (deploy). The registration is
one phase step; the rollout that follows owns its own short transactions (a model server
starts between them)."""

from __future__ import annotations

import uuid

from faststream.nats import NatsRouter

from services.deployer.process_manager import PortUnavailable
from services.deployer.service.deploy import Phase5Announcer, register_model
from services.deployer.state import DeployerContext
from shared.bus import durable_subscriber
from shared.contracts import Phase4Passed
from shared.db import UnitOfWork
from shared.errors import TooManyRequests
from shared.phases import fail_phase, run_phase_step

DEPLOY = "deployer-phase4-passed"


def create_handlers(context: DeployerContext) -> NatsRouter:
    router = NatsRouter()

    @durable_subscriber(router, Phase4Passed, DEPLOY)
    async def on_phase4_passed(event: Phase4Passed) -> None:
        await deploy_validated_model(context, event)

    return router


async def deploy_validated_model(context: DeployerContext, event: Phase4Passed) -> None:
    """Phase 5 for one event, once: register the model, serve it. A redelivery goes on only
    with a rollout that a deployer killed in the middle of it left unfinished."""

    async def step(uow: UnitOfWork) -> uuid.UUID:
        return await register_model(context, uow, event)

    model_id = await run_phase_step(context, event, DEPLOY, 5, step)
    if model_id is None:
        deployer = context.state.deployer
        model_id = await deployer.unfinished_rollout(event.tenant_id, event.workflow_id)
    if model_id is None:
        return
    # The rollout reports phase 5's outcome with the announcer's files, keys and events.
    announcer = Phase5Announcer(context, event)
    try:
        await context.state.deployer.deploy(event.tenant_id, model_id, announcer=announcer)
    except (PortUnavailable, TooManyRequests) as exc:
        async with context.unit_of_work() as uow:
            await fail_phase(uow, 5, event.workflow_id, event.tenant_id, str(exc))
