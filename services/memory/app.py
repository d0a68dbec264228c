from fastapi import FastAPI

from services.memory.api import router
from services.memory.models import Base
from services.memory.settings import MemorySettings
from shared.service_app import create_service_app


def create_app(settings: MemorySettings | None = None) -> FastAPI:
    return create_service_app(
        "memory",
        settings or MemorySettings(),  # type: ignore[call-arg]
        Base.metadata,
        [router],
        description="Workflow memory: versioned JSON keys per tenant and namespace, in Postgres.",
    )
