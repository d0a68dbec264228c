from fastapi import FastAPI

from services.cluster.clusters_api import router as clusters_router
from services.cluster.events import create_event_router
from services.cluster.models import Base
from services.cluster.runtime import runtime_of
from services.cluster.settings import ClusterSettings
from services.cluster.supervision import (
    flush_heartbeats_forever,
    recover_orphans,
    release_all,
    watch_forever,
)
from services.cluster.workflows_api import router as workflows_router
from shared.service_app import ServiceContext, create_service_app


async def _on_startup(context: ServiceContext) -> None:
    runtime = runtime_of(context)
    await recover_orphans(context)
    runtime.spawn(flush_heartbeats_forever(context), name="cluster-heartbeats")
    runtime.spawn(watch_forever(context), name="cluster-watchdog")


def create_app(settings: ClusterSettings | None = None) -> FastAPI:
    return create_service_app(
        "cluster",
        settings or ClusterSettings(),  # type: ignore[call-arg]
        Base.metadata,
        [workflows_router, clusters_router],
        description="Workflows (phase 1 and status of every phase) and clusters of node "
        "processes (phase 2's node half).",
        event_router=create_event_router,
        on_startup=_on_startup,
        on_shutdown=release_all,
    )
