"""The model server's FastAPI app: one model, loaded once at start, answering predictions."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from services.deployer.model_server.access import ModelAccess, RequireCredential
from services.deployer.model_server.batching import BatchingConfig, BatchMetrics, DynamicBatcher
from services.deployer.model_server.metrics import ModelMetrics
from services.deployer.model_server.predictions import Predictions, PredictRoute
from services.deployer.model_server.protocol_routes import add_protocol_routes
from services.deployer.model_server.schemas import (
    ENDPOINTS,
    MAX_ROWS,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    RegressionResponse,
    json_body,
)
from shared.errors import Unavailable, install_error_handlers
from shared.health import health_router, install_http_metrics
from shared.ml.predictor import Predictor
from shared.ml.runtimes import fastest_runtime, int8_runtime
from shared.telemetry import FASTAPI_TELEMETRY_OFF, create_tracer_provider, instrument_app

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelIdentity:
    """How the deployer registered the model (all optional for a stand-alone serve.py)."""

    model_id: str | None = None
    name: str | None = None
    version: int | None = None


def create_model_app(
    model_dir: str,
    identity: ModelIdentity | None = None,
    batching: BatchingConfig | None = None,
    access: ModelAccess | None = None,
    precision: str = "float32",
) -> FastAPI:
    """The app serving the model saved in `model_dir`; `access` checks who may ask it
    (None: anyone, a public model); `precision` int8 serves its weights quantized."""
    identity = identity or ModelIdentity()
    batching = batching or BatchingConfig(max_batch_size=1, max_wait_s=0.0)
    registry = CollectorRegistry()
    metrics = ModelMetrics(registry, identity.model_id or "unregistered")
    # The name the inference protocols address it by: its registered name, or "model".
    name, version = identity.name or "model", str(identity.version or 1)
    predictions = Predictions(metrics, identity.model_id, name, version)
    provider = create_tracer_provider("model-server", os.environ.get("NEXUS_OTLP_ENDPOINT"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Loading reads and checksums the weights: off the event loop. A model that does not
        # load makes start-up fail, so the process exits and the deployer sees why in its log.
        started = time.perf_counter()
        predictor = await run_in_threadpool(Predictor.from_path, model_dir)
        # Torch, TorchScript or ONNX Runtime, whichever answers a row faster here (and the
        # same); or, asked for, ONNX Runtime with int8 weights.
        choose = int8_runtime if precision == "int8" else fastest_runtime
        runtime = await run_in_threadpool(choose, predictor.loaded.model, predictor.num_features)
        predictor.use(runtime)
        if batching.enabled:
            batch_metrics = BatchMetrics(registry, identity.model_id or "unregistered")
            predictions.batcher = DynamicBatcher(
                predictor.forward, batching, batch_metrics, lambda: predictions.in_flight
            )
        app.state.runtime = runtime
        predictions.predictor = predictor
        app.state.loaded_at = datetime.now(UTC).isoformat()
        # Everything alive now (torch, the model, the app) lives as long as the server: out
        # of the collector's sight, a full collection no longer walks them all, which
        # stalled requests under load for 100 ms and more.
        gc.collect()
        gc.freeze()
        logger.info(
            "model %s loaded in %.2fs, served by %s (single row: %s)",
            model_dir,
            time.perf_counter() - started,
            runtime.name,
            ", ".join(f"{name} {us:.0f} us" for name, us in runtime.single_row_us.items()),
        )
        yield
        provider.force_flush()

    title = f"Nexus model {identity.name or identity.model_id or model_dir}"
    app = FastAPI(
        title=title,
        description="A model trained and validated by Nexus, served for predictions.",
        version=str(identity.version or "0"),
        lifespan=lifespan,
        telemetry=FASTAPI_TELEMETRY_OFF,
    )
    app.state.metrics_registry = registry
    # Added first, so innermost of the middleware: traced and counted like any route.
    app.add_middleware(PredictRoute, predictions=predictions, app_routes=app.routes)
    # Outside it: a refused request never reaches the model, and is traced and counted.
    app.add_middleware(RequireCredential, access=access)
    instrument_app(app, provider)
    install_error_handlers(app)
    install_http_metrics(app, registry, "model-server")

    async def model_loaded() -> None:
        if predictions.predictor is None:
            raise RuntimeError("model not loaded yet")

    app.include_router(health_router("model-server", {"model": model_loaded}))

    def predictor_of(request: Request) -> Predictor:
        predictor = predictions.predictor
        if predictor is None:
            raise Unavailable("the model is still loading")
        return predictor

    @app.post(
        "/predict",
        response_model=PredictResponse | RegressionResponse,
        openapi_extra=json_body(PredictRequest),
        tags=["model"],
    )
    async def predict(request: Request) -> Response:
        """Classify 1 to 1000 rows of raw feature values, or predict their values."""
        status, payload = await predictions.answer(await request.body())
        return Response(payload, status_code=status, media_type="application/json")

    add_protocol_routes(app, predictions)

    @app.get("/", response_model=ModelInfo, tags=["model"])
    def model_info(request: Request) -> ModelInfo:
        """What is served: model identity, features, classes, architecture and metrics."""
        predictor = predictor_of(request)
        metadata = predictor.loaded.metadata
        return ModelInfo(
            model_id=identity.model_id,
            name=identity.name,
            version=identity.version,
            format=str(metadata.get("format")),
            dataset=(metadata.get("extra") or {}).get("dataset"),
            num_features=predictor.num_features,
            task=predictor.task,
            class_names=predictor.class_names,
            architecture=predictor.loaded.architecture.to_dict(),
            parameter_count=metadata.get("parameter_count"),
            metrics=metadata.get("metrics") or {},
            trained_at=metadata.get("created_at"),
            loaded_at=request.app.state.loaded_at,
            runtime=request.app.state.runtime.name,
            precision=request.app.state.runtime.precision,
            runtime_differences={
                name: float(f"{difference:.3g}")
                for name, difference in request.app.state.runtime.differences.items()
            },
            access=access.describe() if access else "public: anyone may ask",
            batching={
                "max_batch_size": batching.max_batch_size,
                "max_wait_us": round(batching.max_wait_s * 1e6),
            },
            runtime_single_row_us={
                name: round(us, 1) for name, us in request.app.state.runtime.single_row_us.items()
            },
            endpoints={**ENDPOINTS, "max_rows_per_request": str(MAX_ROWS)},
        )

    return app
