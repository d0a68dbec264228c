"""The deployer service: phase 5 (deploy), the model registry, and the model servers.

Model servers are child processes of the deployer. On shutdown it stops them but leaves
their deployments `running`, the state they should be in; on start-up it brings each back
(adopting a server that is somehow still up, restarting one that is gone, on its old port
when free) and marks rollouts that a stop cut short as failed. Set
NEXUS_RESTORE_ON_STARTUP=false to leave them down.
"""

from fastapi import FastAPI

from services.deployer import state
from services.deployer.api import router
from services.deployer.handlers import create_handlers
from services.deployer.models import Base
from services.deployer.settings import DeployerSettings
from shared.service_app import create_service_app


def create_app(settings: DeployerSettings | None = None) -> FastAPI:
    return create_service_app(
        "deployer",
        settings or DeployerSettings.from_env(),
        Base.metadata,
        [router],
        description="Phase 5: registers validated models, serves them, and rolls them back.",
        handlers=create_handlers,
        state_factory=state.create_state,
        on_startup=state.start,
        on_shutdown=state.stop,
    )
