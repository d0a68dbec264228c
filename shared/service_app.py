"""Builds a Nexus service: one FastAPI app whose lifespan owns the database engine, the NATS
broker, the HTTP client and the telemetry, with health, metrics and the error envelope.

A service supplies its routers and, optionally, its NATS handlers, a factory for its typed
process state, and start-up/shut-down hooks; everything shared is wired here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, TypeVar

import httpx
from fastapi import APIRouter, Depends, FastAPI, Request
from faststream.nats import NatsBroker, NatsRouter
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.artifacts import ArtifactStore
from shared.bus import BrokerLink, create_broker, ensure_stream, publisher_for, set_consumer_prefix
from shared.db import UnitOfWork, create_engine, make_sessionmaker, ping, relay_outbox
from shared.errors import install_error_handlers
from shared.health import health_router, install_http_metrics
from shared.security import TokenVerifier, remote_verifier
from shared.settings import ServiceSettings
from shared.tasks import cancel_and_wait
from shared.telemetry import (
    FASTAPI_TELEMETRY_OFF,
    configure_logging,
    create_tracer_provider,
    instrument_app,
    instrument_clients,
)

logger = logging.getLogger(__name__)

OUTBOX_RELAY_INTERVAL_S = 10.0


SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
StateT = TypeVar("StateT")


@dataclass
class ServiceContext(Generic[SettingsT, StateT]):
    """Everything a service's routes and handlers share, created in the lifespan.

    `settings` is the service's own settings class and `state` what its `state_factory`
    built (its process state: node processes, model servers); each service names the pair
    once, e.g. `ClusterContext = ServiceContext[ClusterSettings, ClusterState]`."""

    name: str
    settings: SettingsT
    metadata: MetaData
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    broker: NatsBroker
    http: httpx.AsyncClient
    artifacts: ArtifactStore
    tracer_provider: TracerProvider
    metrics_registry: CollectorRegistry
    # Whether the broker connection is up, and since when.
    broker_link: BrokerLink
    # Checks bearer tokens for HTTP requests and for events that carry one.
    token_verifier: TokenVerifier = field(init=False)
    state: StateT = field(init=False)

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.sessionmaker, self.metadata, publisher_for(self.broker))


AnyContext = ServiceContext[Any, Any]


def get_context(request: Request) -> AnyContext:
    context: AnyContext = request.app.state.context
    return context


async def _unit_of_work(request: Request) -> AsyncIterator[UnitOfWork]:
    # The request is the transaction boundary: commit when the handler returns normally.
    async with get_context(request).unit_of_work() as uow:
        yield uow


# scope="function": commit before the response is sent. FastAPI's default runs a yield
# dependency's exit after sending, so a client could be told 2xx before the data is stored
# (and read it back as missing, or never, if the commit then failed).
UnitOfWorkDep = Annotated[UnitOfWork, Depends(_unit_of_work, scope="function")]


def create_service_app(
    name: str,
    settings: SettingsT,
    metadata: MetaData,
    routers: list[APIRouter],
    *,
    description: str,
    handlers: Callable[[ServiceContext[SettingsT, StateT]], NatsRouter] | None = None,
    state_factory: Callable[[ServiceContext[SettingsT, StateT]], StateT] | None = None,
    on_startup: Callable[[ServiceContext[SettingsT, StateT]], Awaitable[None]] | None = None,
    on_shutdown: Callable[[ServiceContext[SettingsT, StateT]], Awaitable[None]] | None = None,
    token_verifier: Callable[[ServiceContext[SettingsT, StateT]], TokenVerifier] | None = None,
) -> FastAPI:
    """The app of one service. `handlers` builds its NATS consumers (handlers.py),
    `state_factory` its typed process state (state.py); both get the context."""
    configure_logging(settings.log_level)
    metrics_registry = CollectorRegistry()
    provider = create_tracer_provider(name, settings.otlp_endpoint)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        link = BrokerLink()
        broker = create_broker(settings.nats_url, name, provider, metrics_registry, link)
        context: ServiceContext[SettingsT, StateT] = ServiceContext(
            name=name,
            settings=settings,
            metadata=metadata,
            engine=engine,
            sessionmaker=make_sessionmaker(engine),
            broker=broker,
            broker_link=link,
            http=httpx.AsyncClient(timeout=30),
            artifacts=ArtifactStore(settings.artifacts),
            tracer_provider=provider,
            metrics_registry=metrics_registry,
        )
        instrument_clients(context.http, engine, provider)
        context.token_verifier = (
            token_verifier(context)
            if token_verifier
            else remote_verifier(settings.auth_url, settings.internal_token_or_none())
        )
        # Before the broker starts: a handler may run as soon as it does.
        if state_factory is not None:
            context.state = state_factory(context)
        app.state.context = context
        app.state.token_verifier = context.token_verifier
        if handlers is not None:
            set_consumer_prefix(settings.consumer_prefix)
            broker.include_router(handlers(context))
        await broker.connect()
        await ensure_stream(broker)
        await broker.start()
        relay = asyncio.create_task(_relay_forever(context), name=f"{name}-outbox-relay")
        if on_startup is not None:
            await on_startup(context)
        logger.info("%s service started on port %s", name, settings.port)
        try:
            yield
        finally:
            if on_shutdown is not None:
                await on_shutdown(context)
            await cancel_and_wait([relay])
            await broker.stop()
            await context.http.aclose()
            await engine.dispose()
            provider.force_flush()

    app = FastAPI(
        title=f"Nexus {name}",
        description=description,
        version="0.1.0",
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY_OFF,
    )
    app.state.metrics_registry = metrics_registry
    instrument_app(app, provider)
    install_error_handlers(app)
    install_http_metrics(app, metrics_registry, name)

    async def database_ready() -> None:
        await ping(app.state.context.engine)

    async def nats_ready() -> None:
        if not await app.state.context.broker.ping(timeout=2):
            raise ConnectionError("NATS not connected")

    app.include_router(health_router(name, {"database": database_ready, "nats": nats_ready}))
    for router in routers:
        app.include_router(router)
    return app


async def _relay_forever(context: AnyContext) -> None:
    publish = publisher_for(context.broker)
    while True:
        try:
            count = await relay_outbox(context.sessionmaker, context.metadata, publish)
            if count:
                logger.warning("relayed %d outbox events left by an interrupted publish", count)
        except Exception:
            logger.exception("outbox relay failed; retrying")
        await asyncio.sleep(OUTBOX_RELAY_INTERVAL_S)


def run_service(app_factory: Callable[[], FastAPI], settings: ServiceSettings) -> None:
    """`python -m services.<name>`: serve with uvicorn (uvloop + httptools when present)."""
    import uvicorn

    app = app_factory()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )
