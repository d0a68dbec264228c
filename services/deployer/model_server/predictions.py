"""The served model's hot path: a predict request's body in, the status and JSON body of
its answer out, and the ASGI route that serves it.

Measured under load, FastAPI's body parsing, dependency solving and response-model
serialization cost more than the model's forward pass. Here the body is parsed and
validated in one pass by pydantic-core, the answer serialized by it too, and `PredictRoute`
answers `POST /predict` inside the tracing and metrics middleware but ahead of the router.
The FastAPI route of the same path (for the OpenAPI document) answers through the same
`Predictions`, should a request ever reach it.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi.routing import APIRoute
from pydantic import ValidationError
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.deployer.model_server.batching import DynamicBatcher
from services.deployer.model_server.metrics import ModelMetrics
from services.deployer.model_server.protocols import (
    BINARY_HEADER,
    ProtocolError,
    parse_infer,
    rows_from_instances,
    v1_answer,
    v2_answer,
)
from services.deployer.model_server.schemas import MAX_ROWS, PredictRequest
from shared.asgi import header
from shared.errors import describe_validation_errors, error_body
from shared.ml.predictor import PredictionResult, Predictor, RegressionResult

# Up to this many rows are predicted on the event loop (well under a millisecond).
INLINE_ROWS = 32
# Bytes a JSON number of a row may take, with its separator, before a body is too large.
_BYTES_PER_VALUE = 32
_JSON_HEADERS = [(b"content-type", b"application/json")]

# The templates of the protocols' routes, as the app declares them.
V1_PREDICT = "/v1/models/{model_name}:predict"
V2_INFER = "/v2/models/{model_name}/infer"
BINARY = BINARY_HEADER.encode()

Answer = tuple[int, bytes]
Result = PredictionResult | RegressionResult


def _error(status: int, error: str, detail: Any) -> Answer:
    return status, to_json(error_body(error, detail))


class Predictions:
    """Answers predict requests, in each protocol, for the model the server loaded
    (`predictor`, None until then), counting them in `metrics`."""

    def __init__(
        self, metrics: ModelMetrics, model_id: str | None, name: str, version: str
    ) -> None:
        self.metrics = metrics
        self.model_id = model_id
        self.name, self.version = name, version
        self.predictor: Predictor | None = None
        # Set with the predictor when the deployment batches requests.
        self.batcher: DynamicBatcher | None = None
        # Predict requests being handled now, from their first byte read (PredictRoute).
        self.in_flight = 0

    def max_body_bytes(self) -> int:
        width = self.predictor.num_features if self.predictor is not None else 1
        return MAX_ROWS * width * _BYTES_PER_VALUE + 4096

    async def answer(self, body: bytes) -> Answer:
        """`POST /predict`: `{"rows": ...}` in; classes, labels and probabilities, or values."""
        try:
            rows = _rows_of(body)
            result = await self._predict(rows)
        except ProtocolError as exc:
            self.metrics.errors.inc()
            return _error(422, "validation_error", exc.detail)
        except _NotLoaded:
            return _error(503, "unavailable", "the model is still loading")
        if isinstance(result, RegressionResult):
            answer: dict[str, Any] = {
                "predictions": [{"value": value} for value in result.values],
                "model_id": self.model_id,
            }
        else:
            answer = {
                "predictions": result.classes,
                "labels": result.class_names,
                "probabilities": result.probabilities,
                "model_id": self.model_id,
            }
        return 200, to_json(answer)

    async def answer_v1(self, body: bytes) -> Answer:
        """KServe v1: `{"instances": ...}` in, `{"predictions": ...}` out."""
        try:
            result = await self._predict(rows_from_instances(body))
        except ProtocolError as exc:
            self.metrics.errors.inc()
            return _error(422, "validation_error", exc.detail)
        except _NotLoaded:
            return _error(503, "unavailable", "the model is still loading")
        return 200, to_json(v1_answer(result))

    async def answer_v2(self, body: bytes, json_length: str | None) -> Answer:
        """The Open Inference Protocol's infer; its errors are `{"error": message}`."""
        predictor = self.predictor
        try:
            if predictor is None:
                raise _NotLoaded
            call = parse_infer(body, json_length, predictor.num_features)
            result = await self._predict(call.rows)
            return 200, to_json(v2_answer(call, result, self.name, self.version))
        except ProtocolError as exc:
            self.metrics.errors.inc()
            return 400, to_json({"error": str(exc), "detail": exc.detail})
        except _NotLoaded:
            return 503, to_json({"error": "the model is still loading"})

    async def _predict(self, rows: list[list[float]] | np.ndarray) -> Result:
        predictor = self.predictor
        if predictor is None:
            raise _NotLoaded
        started = time.perf_counter()
        for i, row in enumerate(rows):
            if len(row) != predictor.num_features:
                expected = predictor.num_features
                message = f"row {i} has {len(row)} features; the model expects {expected}"
                raise ProtocolError(message, [{"field": f"rows.{i}", "message": message}])
        try:
            if len(rows) > INLINE_ROWS:
                result = await run_in_threadpool(predictor.answer, rows)
            elif self.batcher is not None:
                prepared = predictor.prepare(rows)  # a bad row is refused before batching
                result = predictor.interpret(await self.batcher.run(prepared))
            else:
                result = predictor.answer(rows)
        except ValueError as exc:
            raise ProtocolError(str(exc), [{"field": "rows", "message": str(exc)}]) from None
        self.metrics.latency.observe(time.perf_counter() - started)
        self.metrics.requests.inc()
        self.metrics.rows.inc(len(rows))
        return result


class _NotLoaded(Exception):
    pass


def _rows_of(body: bytes) -> list[list[float]]:
    try:
        return PredictRequest.model_validate_json(body).rows
    except ValidationError as exc:
        raise ProtocolError(
            "invalid rows", describe_validation_errors([dict(e) for e in exc.errors()])
        ) from None


class PredictRoute:
    """ASGI middleware answering the served model's predict requests (`POST /predict`, and
    the KServe v1 and v2 paths of its name) from `predictions`; every other request goes on
    to the app. The app's FastAPI routes of those paths (`app_routes`: they exist by the time
    the middleware is built, at the first request) are put in the scope as the router would,
    so tracing and metrics name them."""

    def __init__(self, app: ASGIApp, predictions: Predictions, app_routes: list[Any]) -> None:
        self.app = app
        self.predictions = predictions
        routes = {route.path: route for route in app_routes if isinstance(route, APIRoute)}
        name = predictions.name
        self.paths = {
            "/predict": (routes["/predict"], "predict"),
            f"/v1/models/{name}:predict": (routes[V1_PREDICT], "v1"),
            f"/v2/models/{name}/infer": (routes[V2_INFER], "v2"),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = None
        if scope["type"] == "http" and scope["method"] == "POST":
            target = self.paths.get(scope["path"])
        if target is None:
            await self.app(scope, receive, send)
            return
        self.predictions.in_flight += 1
        try:
            await self._answer(scope, receive, send, *target)
        finally:
            self.predictions.in_flight -= 1

    async def _answer(
        self, scope: Scope, receive: Receive, send: Send, route: Any, protocol: str
    ) -> None:
        scope["route"] = route
        limit = self.predictions.max_body_bytes()
        body = await _read_body(receive, limit)
        if body is None:
            message = f"the body is over {limit} bytes"
            status, payload = _error(413, "payload_too_large", message)
        elif protocol == "predict":
            status, payload = await self.predictions.answer(body)
        elif protocol == "v1":
            status, payload = await self.predictions.answer_v1(body)
        else:
            status, payload = await self.predictions.answer_v2(body, header(scope, BINARY))
        headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
