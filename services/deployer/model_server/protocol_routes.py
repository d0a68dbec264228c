"""The KServe v1 and Open Inference Protocol (v2) routes of a served model. Its predict and
infer requests are answered by `PredictRoute` ahead of these (`predictions.py`); the routes
here document them, answer the same way should a request reach them, and refuse another
model's name."""

from __future__ import annotations

from enum import Enum
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from services.deployer.model_server.predictions import V1_PREDICT, V2_INFER, Predictions
from services.deployer.model_server.protocols import (
    BINARY_HEADER,
    InferRequest,
    InstancesRequest,
    model_metadata,
)
from services.deployer.model_server.schemas import json_body


def add_protocol_routes(router: FastAPI, predictions: Predictions) -> None:
    """On the app itself, not an included router: `PredictRoute` finds them among its routes."""
    tags: list[str | Enum] = ["inference protocols"]

    def unknown(model_name: str) -> JSONResponse | None:
        if model_name == predictions.name:
            return None
        return JSONResponse({"error": f"no model named {model_name!r} here"}, status_code=404)

    def ready() -> bool:
        return predictions.predictor is not None

    @router.post(V1_PREDICT, openapi_extra=json_body(InstancesRequest), tags=tags)
    async def v1_predict(model_name: str, request: Request) -> Response:
        """KServe v1: `{"instances": rows}` in, `{"predictions": [...]}` out."""
        refused = unknown(model_name)
        if refused is not None:
            return refused
        status, payload = await predictions.answer_v1(await request.body())
        return Response(payload, status_code=status, media_type="application/json")

    @router.get("/v1/models/{model_name}", tags=tags)
    async def v1_model(model_name: str) -> Response:
        """KServe v1: the model's name and whether it is ready."""
        return unknown(model_name) or JSONResponse({"name": predictions.name, "ready": ready()})

    @router.get("/v2", tags=tags)
    async def v2_server() -> dict[str, Any]:
        """The Open Inference Protocol's server metadata."""
        return {"name": "nexus", "version": "2", "extensions": ["binary_tensor_data"]}

    @router.get("/v2/health/live", tags=tags)
    async def v2_live() -> Response:
        """The server is alive."""
        return Response(status_code=200)

    @router.get("/v2/health/ready", tags=tags)
    async def v2_ready() -> Response:
        """The model is loaded: 200, else 503."""
        return Response(status_code=200 if ready() else 503)

    @router.get("/v2/models/{model_name}", tags=tags)
    async def v2_model(model_name: str) -> Response:
        """The model's input and outputs: names, data types and shapes."""
        refused = unknown(model_name)
        predictor = predictions.predictor
        if refused is not None or predictor is None:
            return refused or JSONResponse({"error": "the model is still loading"}, status_code=503)
        metadata = model_metadata(
            predictions.name,
            predictions.version,
            predictor.num_features,
            predictor.task,
            len(predictor.class_names),
        )
        return JSONResponse(metadata)

    @router.get("/v2/models/{model_name}/ready", tags=tags)
    async def v2_model_ready(model_name: str) -> Response:
        """The model is loaded: 200, else 503."""
        return unknown(model_name) or Response(status_code=200 if ready() else 503)

    @router.post(V2_INFER, openapi_extra=json_body(InferRequest), tags=tags)
    async def v2_infer(model_name: str, request: Request) -> Response:
        """Infer on one tensor `rows` of shape [n, features], in JSON or binary."""
        refused = unknown(model_name)
        if refused is not None:
            return refused
        body = await request.body()
        status, payload = await predictions.answer_v2(body, request.headers.get(BINARY_HEADER))
        return Response(payload, status_code=status, media_type="application/json")
