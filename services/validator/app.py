from fastapi import FastAPI

from services.validator.api import router
from services.validator.handlers import create_handlers
from services.validator.models import Base
from services.validator.settings import ValidatorSettings
from shared.service_app import create_service_app


def create_app(settings: ValidatorSettings | None = None) -> FastAPI:
    return create_service_app(
        "validator",
        settings or ValidatorSettings.from_env(),
        Base.metadata,
        [router],
        description=(
            "Phase 4: validates trained models on the cluster's validator node (accuracy or R², "
            "latency, overfitting, test suite, sharded inference), applies the quality "
            "gates and writes the performance report."
        ),
        handlers=create_handlers,
    )
