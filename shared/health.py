"""`/healthz`, `/readyz` and `/metrics`, the same on every service."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.asgi import ResponseStatus

ReadinessCheck = Callable[[], Awaitable[None]]


def health_router(service: str, checks: dict[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok", "service": service}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """Every dependency (database, NATS, ...) answers; 503 naming the failing ones if not."""
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:  # any failure means not ready, and says why
                results[name] = f"down: {type(exc).__name__}: {exc}"[:300]
        if all(v == "ok" for v in results.values()):
            return JSONResponse({"status": "ready", "service": service, "checks": results})
        return JSONResponse({"error": "not_ready", "detail": results}, status_code=503)

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus metrics of this process."""
        registry: CollectorRegistry = request.app.state.metrics_registry
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def install_http_metrics(app: FastAPI, registry: CollectorRegistry, service: str) -> None:
    app.add_middleware(HttpMetricsMiddleware, registry=registry, service=service)


class HttpMetricsMiddleware:
    """Counts requests and their latency by route template. A plain ASGI middleware, not
    `@app.middleware("http")`, which costs a task and a response copy on every request."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry, service: str) -> None:
        self.app = app
        self.service = service
        self.requests = Counter(
            "nexus_http_requests_total",
            "HTTP requests handled",
            ["service", "method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "nexus_http_request_seconds",
            "HTTP request latency",
            ["service", "method", "route"],
            registry=registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = ResponseStatus(send)
        try:
            await self.app(scope, receive, status.send)
        finally:
            # The route template, not the raw path, so ids do not explode the label space.
            path = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            self.requests.labels(self.service, method, path, str(status.code)).inc()
            self.latency.labels(self.service, method, path).observe(time.perf_counter() - started)
