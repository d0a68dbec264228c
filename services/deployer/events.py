"""The deployer's event consumers: phase 4 passed -> phase 5 (deploy)."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.deployer.phase5 import CONSUMER, handle_phase4_passed
from services.deployer.rollout import Deployer
from services.deployer.settings import DeployerSettings
from shared.bus import durable_subscriber
from shared.events import Phase4Passed
from shared.service_app import ServiceContext

DEPLOYER_KEY = "deployer"


def deployer_of(context: ServiceContext) -> Deployer:
    """The service's one Deployer (process manager + rollouts), created on first use: the
    broker may deliver an event before the start-up hook has run."""
    deployer = context.extras.get(DEPLOYER_KEY)
    if deployer is None:
        assert isinstance(context.settings, DeployerSettings)
        deployer = context.extras[DEPLOYER_KEY] = Deployer(context, context.settings)
    return deployer


def create_event_router(context: ServiceContext) -> NatsRouter:
    router = NatsRouter()

    @durable_subscriber(router, Phase4Passed, CONSUMER)
    async def on_phase4_passed(event: Phase4Passed) -> None:
        await handle_phase4_passed(context, deployer_of(context), event)

    return router
