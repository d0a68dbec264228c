"""The deployer service: phase 5 (deploy), the model registry, and the model servers.

Model servers are child processes of the deployer. On shutdown it stops them but leaves
their deployments `running`, the state they should be in; on start-up it brings each back
(adopting a server that is somehow still up, restarting one that is gone, on its old port
when free) and marks rollouts that a stop cut short as failed. Set
NEXUS_RESTORE_ON_STARTUP=false to leave them down.
"""

import asyncio
import contextlib
import logging

from fastapi import FastAPI

from services.deployer.api import router
from services.deployer.events import create_event_router, deployer_of
from services.deployer.models import Base
from services.deployer.settings import DeployerSettings
from shared.service_app import ServiceContext, create_service_app

logger = logging.getLogger(__name__)

RESTORE_TASK_KEY = "restore_task"


async def _on_startup(context: ServiceContext) -> None:
    deployer = deployer_of(context)
    if deployer.settings.restore_on_startup:
        # In the background: restarting servers takes seconds each and must not hold up
        # readiness or the event consumers.
        context.extras[RESTORE_TASK_KEY] = asyncio.create_task(
            deployer.restore(), name="deployer-restore"
        )


async def _on_shutdown(context: ServiceContext) -> None:
    task = context.extras.pop(RESTORE_TASK_KEY, None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await deployer_of(context).close()


def create_app(settings: DeployerSettings | None = None) -> FastAPI:
    return create_service_app(
        "deployer",
        settings or DeployerSettings(),  # type: ignore[call-arg]
        Base.metadata,
        [router],
        description="Phase 5: registers validated models, serves them, and rolls them back.",
        event_router=create_event_router,
        on_startup=_on_startup,
        on_shutdown=_on_shutdown,
    )
