from fastapi import FastAPI

from services.trainer.api import router
from services.trainer.events import create_event_router
from services.trainer.models import Base
from services.trainer.settings import TrainerSettings
from shared.service_app import create_service_app


def create_app(settings: TrainerSettings | None = None) -> FastAPI:
    return create_service_app(
        "trainer",
        settings or TrainerSettings(),  # type: ignore[call-arg]
        Base.metadata,
        [router],
        description=(
            "Designs each workflow's network (phase 2) and trains it on a worker node "
            "(phase 3): training jobs, per-epoch metrics, checkpoints and the bundled datasets."
        ),
        event_router=create_event_router,
    )
