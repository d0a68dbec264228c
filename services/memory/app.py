from fastapi import FastAPI

from services.memory.api import router
from services.memory.handlers import create_handlers
from services.memory.models import Base
from services.memory.settings import MemorySettings
from shared.service_app import create_service_app


def create_app(settings: MemorySettings | None = None) -> FastAPI:
    return create_service_app(
        "memory",
        settings or MemorySettings.from_env(),
        Base.metadata,
        [router],
        description="Workflow memory: versioned JSON keys per tenant and namespace, in Postgres; "
        "the phases' keys arrive as events.",
        handlers=create_handlers,
    )
