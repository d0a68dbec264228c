"""Every HTTP request is one server span in its caller's trace, named by its route."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared.telemetry import FASTAPI_TELEMETRY_OFF, instrument_app

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


def traced_app() -> tuple[FastAPI, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = FastAPI(telemetry=FASTAPI_TELEMETRY_OFF)

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, int]:
        if item_id == 0:
            raise RuntimeError("no item zero")
        return {"id": item_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    instrument_app(app, provider)
    return app, exporter


async def test_a_request_is_one_span_in_its_callers_trace_named_by_its_route() -> None:
    app, exporter = traced_app()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        traceparent = f"00-{TRACE_ID}-{PARENT_ID}-01"
        assert (await client.get("/items/7", headers={"traceparent": traceparent})).is_success
        assert (await client.get("/healthz")).is_success
        assert (await client.get("/items/0")).status_code == 500

    found, failed = exporter.get_finished_spans()
    assert found.name == "GET /items/{item_id}" and found.kind == SpanKind.SERVER
    assert format(found.context.trace_id, "032x") == TRACE_ID
    assert found.parent is not None and format(found.parent.span_id, "016x") == PARENT_ID
    assert found.attributes is not None
    assert found.attributes["http.response.status_code"] == 200
    assert found.attributes["url.path"] == "/items/7"
    # A request with no caller's context starts a trace; a server error marks its span.
    assert failed.parent is None and failed.status.status_code == StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["http.response.status_code"] == 500
