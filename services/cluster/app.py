from fastapi import FastAPI

from services.cluster import background
from services.cluster.api import routers
from services.cluster.handlers import create_handlers
from services.cluster.models import Base
from services.cluster.settings import ClusterSettings
from services.cluster.state import create_state
from shared.service_app import create_service_app


def create_app(settings: ClusterSettings | None = None) -> FastAPI:
    return create_service_app(
        "cluster",
        settings or ClusterSettings.from_env(),
        Base.metadata,
        routers,
        description="Workflows (phase 1, and the record of every phase) and clusters of node "
        "processes.",
        handlers=create_handlers,
        state_factory=create_state,
        on_startup=background.start,
        on_shutdown=background.stop,
    )
