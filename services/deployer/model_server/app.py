"""The model server's FastAPI app: one model, loaded once at start, answering predictions."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.concurrency import run_in_threadpool

from services.deployer.model_server.schemas import (
    ENDPOINTS,
    MAX_ROWS,
    ModelInfo,
    PredictRequest,
    PredictResponse,
    RegressionPrediction,
    RegressionResponse,
)
from shared.errors import Unavailable, Unprocessable, install_error_handlers
from shared.health import health_router, install_http_metrics
from shared.ml.predictor import Predictor, RegressionResult
from shared.telemetry import create_tracer_provider, instrument_app

logger = logging.getLogger(__name__)

# Up to this many rows are predicted on the event loop (well under a millisecond).
INLINE_ROWS = 32


@dataclass(frozen=True)
class ModelIdentity:
    """How the deployer registered the model (all optional for a stand-alone serve.py)."""

    model_id: str | None = None
    name: str | None = None
    version: int | None = None


class _Metrics:
    def __init__(self, registry: CollectorRegistry, model_id: str) -> None:
        labels = ["model_id"]
        self.requests = Counter(
            "nexus_model_predictions_total", "Predict requests answered", labels, registry=registry
        ).labels(model_id)
        self.rows = Counter(
            "nexus_model_rows_total", "Rows predicted", labels, registry=registry
        ).labels(model_id)
        self.errors = Counter(
            "nexus_model_rejected_requests_total",
            "Predict requests refused for bad rows",
            labels,
            registry=registry,
        ).labels(model_id)
        self.latency = Histogram(
            "nexus_model_predict_seconds",
            "Time to validate, normalize and predict one request's rows",
            labels,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        ).labels(model_id)


def create_model_app(model_dir: str, identity: ModelIdentity | None = None) -> FastAPI:
    identity = identity or ModelIdentity()
    registry = CollectorRegistry()
    metrics = _Metrics(registry, identity.model_id or "unregistered")
    provider = create_tracer_provider("model-server", os.environ.get("NEXUS_OTLP_ENDPOINT"))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Loading reads and checksums the weights: off the event loop. A model that does not
        # load makes start-up fail, so the process exits and the deployer sees why in its log.
        started = time.perf_counter()
        app.state.predictor = await run_in_threadpool(Predictor.from_path, model_dir)
        app.state.loaded_at = datetime.now(UTC).isoformat()
        logger.info("model %s loaded in %.2fs", model_dir, time.perf_counter() - started)
        yield
        provider.force_flush()

    title = f"Nexus model {identity.name or identity.model_id or model_dir}"
    app = FastAPI(
        title=title,
        description="A model trained and validated by Nexus, served for predictions.",
        version=str(identity.version or "0"),
        lifespan=lifespan,
    )
    app.state.metrics_registry = registry
    app.state.predictor = None
    instrument_app(app, provider)
    install_error_handlers(app)
    install_http_metrics(app, registry, "model-server")

    async def model_loaded() -> None:
        if app.state.predictor is None:
            raise RuntimeError("model not loaded yet")

    app.include_router(health_router("model-server", {"model": model_loaded}))

    def predictor_of(request: Request) -> Predictor:
        predictor: Predictor | None = request.app.state.predictor
        if predictor is None:
            raise Unavailable("the model is still loading")
        return predictor

    @app.post("/predict", response_model=PredictResponse | RegressionResponse, tags=["model"])
    async def predict(
        body: PredictRequest, request: Request
    ) -> PredictResponse | RegressionResponse:
        """Classify 1 to 1000 rows of raw feature values, or predict their values."""
        # Inference runs on the event loop: a single row takes ~0.2 ms, far less than the
        # thread-pool hops a sync handler costs; large batches go to a worker thread.
        predictor = predictor_of(request)
        started = time.perf_counter()
        for i, row in enumerate(body.rows):
            if len(row) != predictor.num_features:
                metrics.errors.inc()
                raise Unprocessable(
                    [
                        {
                            "field": f"rows.{i}",
                            "message": f"row {i} has {len(row)} features; "
                            f"the model expects {predictor.num_features}",
                        }
                    ]
                )
        try:
            if len(body.rows) > INLINE_ROWS:
                result = await run_in_threadpool(predictor.answer, body.rows)
            else:
                result = predictor.answer(body.rows)
        except ValueError as exc:
            metrics.errors.inc()
            raise Unprocessable([{"field": "rows", "message": str(exc)}]) from exc
        metrics.latency.observe(time.perf_counter() - started)
        metrics.requests.inc()
        metrics.rows.inc(len(body.rows))
        if isinstance(result, RegressionResult):
            return RegressionResponse(
                predictions=[RegressionPrediction(value=v) for v in result.values],
                model_id=identity.model_id,
            )
        return PredictResponse(
            predictions=result.classes,
            labels=result.class_names,
            probabilities=result.probabilities,
            model_id=identity.model_id,
        )

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
            endpoints={**ENDPOINTS, "max_rows_per_request": str(MAX_ROWS)},
        )

    return app
