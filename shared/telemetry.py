"""Tracing and logging setup.

Traces are always produced (so context crosses HTTP and NATS) but exported only when
`NEXUS_OTLP_ENDPOINT` is set. Logs are one JSON object per line, carrying the trace id.

Logs are bounded: a message repeated in a loop (the same logger, level and format string)
is let through a few times a minute, the rest counted and reported once; and where the
process that started us names a file (`NEXUS_LOG_FILE`), it is rotated by size
(`NEXUS_LOG_MAX_BYTES`, three old files kept).
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from fastapi.telemetry import TelemetryConfig
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.asgi import ResponseStatus
from shared.processes import LOG_FILE_VARIABLE


class JsonLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            entry["trace_id"] = format(span_context.trace_id, "032x")
            entry["span_id"] = format(span_context.span_id, "016x")
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        suppressed = getattr(record, "suppressed", 0)
        if suppressed:
            entry["suppressed"] = suppressed  # copies of this message dropped since it last ran
        return json.dumps(entry, default=str)


class RepeatLimiter(logging.Filter):
    """Lets each message (logger, level, format string) through at most `burst` times per
    `window_s`; the first one after the window carries how many were dropped. A consumer
    failing in a loop then writes a few lines a minute, not thousands."""

    # Format strings are a fixed set in our code; the cap bounds the rest (f-strings).
    _MAX_KEYS = 2000

    def __init__(self, burst: int = 10, window_s: float = 60.0) -> None:
        super().__init__()
        self._burst = burst
        self._window_s = window_s
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # -> [start, count, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] >= self._window_s:
            if len(self._seen) >= self._MAX_KEYS:
                self._seen.clear()
            record.suppressed = int(seen[2]) if seen is not None else 0
            self._seen[key] = [now, 1, 0]
            return True
        seen[1] += 1
        if seen[1] <= self._burst:
            return True
        seen[2] += 1
        return False


class _RotatingLog(logging.handlers.RotatingFileHandler):
    """A size-rotated log file that also takes the process's stdout and stderr (a crash's
    traceback, a library's print), moved to each new file as the old one rotates."""

    def __init__(self, path: str, max_bytes: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=3, encoding="utf-8")
        self._redirect_std_streams()

    def doRollover(self) -> None:  # noqa: N802  (logging's name)
        super().doRollover()
        self._redirect_std_streams()

    def _redirect_std_streams(self) -> None:
        if self.stream is None:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            os.dup2(self.stream.fileno(), fd)


def configure_logging(level: str = "INFO") -> None:
    log_file = os.environ.get(LOG_FILE_VARIABLE)
    handler: logging.Handler
    if log_file:
        handler = _RotatingLog(log_file, int(os.environ.get("NEXUS_LOG_MAX_BYTES", 20 * 2**20)))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(RepeatLimiter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def create_tracer_provider(service: str, otlp_endpoint: str | None) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": f"nexus-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    # Global, so httpx/SQLAlchemy instrumentation and the NATS middleware share one provider.
    trace.set_tracer_provider(provider)
    return provider


_STEPS = trace.get_tracer("nexus.steps")
StepAttribute = str | int | float | bool


def step(name: str, **attributes: StepAttribute) -> AbstractContextManager[trace.Span]:
    """A span for one step of a phase (load the dataset, join the process group, start the
    model server…), a child of the current one: the workflow's trace then shows where each
    phase spends its time, not only which service it was in."""
    return _STEPS.start_as_current_span(name, attributes=attributes)


# FastAPI's own OpenTelemetry spans (a request span, and one per dependency, endpoint and
# serialization) are off: RequestSpanMiddleware traces every request once, for less.
FASTAPI_TELEMETRY_OFF = TelemetryConfig(tracing=False, metrics=False, logs=False)
_UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_CONTEXT_HEADERS = (b"traceparent", b"tracestate", b"baggage")


def instrument_app(app: Any, provider: TracerProvider) -> None:
    """Trace each HTTP request but health, readiness and metrics (RequestSpanMiddleware)."""
    app.add_middleware(RequestSpanMiddleware, provider=provider)


class RequestSpanMiddleware:
    """One server span per HTTP request, in the caller's trace (W3C `traceparent`), named by
    method and route template (`POST /workflows`), with its status code.

    Written here, and a plain ASGI middleware, because OpenTelemetry's ASGI instrumentation
    spends ~170 µs on each request (semantic-convention attributes in two versions, URL
    parsing, metrics of its own): more than a served model takes to answer. This costs
    ~25 µs."""

    def __init__(self, app: ASGIApp, provider: TracerProvider) -> None:
        self.app = app
        self.tracer = provider.get_tracer("nexus.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _CONTEXT_HEADERS
        }
        method = scope["method"]
        status = ResponseStatus(send)

        with self.tracer.start_as_current_span(
            f"{method} {scope['path']}",
            context=propagate.extract(carrier) if carrier else None,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        ) as span:
            try:
                await self.app(scope, receive, status.send)
            finally:
                # The route template is known once routing ran: the name then says which
                # route, not which id (the span's path attribute keeps the id).
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status.code)
                if status.code >= 500:
                    span.set_status(StatusCode.ERROR)


def instrument_clients(http_client: Any, engine: Any, provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    HTTPXClientInstrumentor.instrument_client(http_client, tracer_provider=provider)
    # The instrumentation declares support up to SQLAlchemy 2.0; 2.1 keeps the same events.
    SQLAlchemyInstrumentor().instrument(
        engine=engine.sync_engine, tracer_provider=provider, skip_dep_check=True
    )
