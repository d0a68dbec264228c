from fastapi import FastAPI

from services.trainer.api import router
from services.trainer.dataset_routes import router as dataset_router
from services.trainer.handlers import create_handlers
from services.trainer.models import Base
from services.trainer.settings import TrainerSettings
from shared.service_app import create_service_app


def create_app(settings: TrainerSettings | None = None) -> FastAPI:
    return create_service_app(
        "trainer",
        settings or TrainerSettings.from_env(),
        Base.metadata,
        [router, dataset_router],
        description=(
            "Phase 2 (configure: gates the cluster, designs the network) and phase 3 (trains "
            "it on a worker node): training jobs, per-epoch metrics, checkpoints, the "
            "built-in datasets and tenants' uploaded ones."
        ),
        handlers=create_handlers,
    )
