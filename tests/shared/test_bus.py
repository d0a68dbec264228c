"""Events cross a real NATS JetStream server with their trace context."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import ClassVar

import pytest
from faststream.nats import NatsRouter
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from shared.bus import create_broker, durable_subscriber, ensure_stream, publish_event
from shared.contracts import Event, Phase1Completed


class ProbeEvent(Event):
    subject: ClassVar[str] = f"nexus.test.probe-{uuid.uuid4().hex[:8]}"
    note: str


async def test_event_round_trip_keeps_fields_and_trace_context(nats_url: str) -> None:
    provider = TracerProvider()
    broker = create_broker(nats_url, "test", provider, None)
    received: asyncio.Queue[tuple[ProbeEvent, int]] = asyncio.Queue()
    router = NatsRouter()

    @durable_subscriber(router, ProbeEvent, f"test-probe-{uuid.uuid4().hex[:8]}", timeout=0.5)
    async def on_probe(event: ProbeEvent) -> None:
        trace_id = trace.get_current_span().get_span_context().trace_id
        await received.put((event, trace_id))

    broker.include_router(router)
    await broker.connect()
    await ensure_stream(broker)
    await broker.start()
    try:
        sent = ProbeEvent(workflow_id=uuid.uuid4(), tenant_id="t-1", note="hello")
        with provider.get_tracer("test").start_as_current_span("publisher") as span:
            await publish_event(broker, sent)
            sent_trace = span.get_span_context().trace_id
        event, handler_trace = await asyncio.wait_for(received.get(), timeout=10)
    finally:
        await broker.stop()

    assert event == sent
    assert event.schema_version == 1
    assert handler_trace == sent_trace


def test_events_serialize_to_json_and_back() -> None:
    event = Phase1Completed(
        workflow_id=uuid.uuid4(),
        tenant_id="t",
        cluster_id=uuid.uuid4(),
        spec={"name": "x", "dataset": "iris"},
    )
    again = Phase1Completed.model_validate_json(event.model_dump_json())
    assert again == event
    assert Phase1Completed.subject == "nexus.phase1.completed"


class FlakyEvent(Event):
    subject: ClassVar[str] = f"nexus.test.flaky-{uuid.uuid4().hex[:8]}"


async def test_a_failing_handler_gets_the_event_again_later(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.bus.RETRY_DELAY_S", 0.5)
    broker = create_broker(nats_url, "test", TracerProvider(), None)
    attempts: list[float] = []
    done = asyncio.Event()
    router = NatsRouter()

    @durable_subscriber(router, FlakyEvent, f"test-flaky-{uuid.uuid4().hex[:8]}", timeout=0.5)
    async def on_flaky(event: FlakyEvent) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise ConnectionError("a dependency is down")
        done.set()

    broker.include_router(router)
    await broker.connect()
    await ensure_stream(broker)
    await broker.start()
    try:
        await publish_event(broker, FlakyEvent(workflow_id=uuid.uuid4(), tenant_id="t"))
        await asyncio.wait_for(done.wait(), timeout=15)
    finally:
        await broker.stop()
    assert len(attempts) == 2
    assert attempts[1] - attempts[0] >= 0.4  # redelivered after the delay, not at once


def test_a_diverged_epoch_survives_the_trip_as_json() -> None:
    from shared.contracts import TrainingProgress

    nan = float("nan")
    event = TrainingProgress(
        workflow_id=uuid.uuid4(),
        tenant_id="t",
        job_id=uuid.uuid4(),
        epoch=3,
        epochs=10,
        train_loss=nan,
        train_accuracy=0.1,
        val_loss=nan,
        val_accuracy=0.1,
        seconds=0.5,
    )
    received = TrainingProgress.model_validate_json(event.model_dump_json())
    assert received.train_loss is None
    assert received.val_loss is None
