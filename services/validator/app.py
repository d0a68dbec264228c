from fastapi import FastAPI

from services.validator.api import router
from services.validator.events import create_event_router
from services.validator.models import Base
from services.validator.settings import ValidatorSettings
from shared.service_app import create_service_app


def create_app(settings: ValidatorSettings | None = None) -> FastAPI:
    return create_service_app(
        "validator",
        settings or ValidatorSettings(),  # type: ignore[call-arg]
        Base.metadata,
        [router],
        description=(
            "Phase 4: validates trained models on the cluster's validator node (accuracy, "
            "latency, overfitting, test suite, sharded inference), applies the quality "
            "gates and writes the performance report."
        ),
        event_router=create_event_router,
    )
