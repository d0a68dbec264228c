"""Events cross a real NATS JetStream server with their trace context."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import ClassVar

import pytest
from faststream.nats import NatsBroker, NatsRouter
from nats.aio.msg import Msg
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from shared.bus import (
    MAX_RETRY_DELAY_S,
    RETRY_DELAY_S,
    STREAM_NAME,
    BrokerLink,
    create_broker,
    durable_subscriber,
    ensure_stream,
    publish_event,
    retry_delay,
)
from shared.contracts import Event, EventDeadLettered, Phase1Completed


class ProbeEvent(Event):
    subject: ClassVar[str] = f"nexus.test.probe-{uuid.uuid4().hex[:8]}"
    note: str


async def test_event_round_trip_keeps_fields_and_trace_context(nats_url: str) -> None:
    provider = TracerProvider()
    broker = create_broker(nats_url, "test", provider, None, BrokerLink())
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
    broker = create_broker(nats_url, "test", TracerProvider(), None, BrokerLink())
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


class SlowEvent(Event):
    subject: ClassVar[str] = f"nexus.test.slow-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(("progress_s", "redelivered"), [(0.3, False), (60.0, True)])
async def test_a_handler_longer_than_the_ack_wait_is_delivered_once_while_it_says_it_works(
    nats_url: str, monkeypatch: pytest.MonkeyPatch, progress_s: float, redelivered: bool
) -> None:
    """JetStream redelivers an unacked message after the ack wait (as for a service that died
    handling it), to any replica on the same durable consumer; a handler still at work says
    so, and the message is not handed out again. With no word from it in time (60 s), the
    idle replica is handed the message too (and again after each ack wait it stays silent)."""
    monkeypatch.setattr("shared.bus.ACK_WAIT_S", 1.0)
    monkeypatch.setattr("shared.bus.ACK_PROGRESS_S", progress_s)
    consumer = f"test-slow-{uuid.uuid4().hex[:8]}"
    seen: list[uuid.UUID] = []

    def replica() -> NatsBroker:
        broker = create_broker(nats_url, "test", TracerProvider(), None, BrokerLink())
        router = NatsRouter()

        @durable_subscriber(router, SlowEvent, consumer, timeout=0.5)
        async def on_slow(event: SlowEvent) -> None:
            seen.append(event.event_id)
            await asyncio.sleep(2.5)

        broker.include_router(router)
        return broker

    replicas = [replica(), replica()]
    for broker in replicas:
        await broker.connect()
        await ensure_stream(broker)
        await broker.start()
    try:
        await publish_event(replicas[0], SlowEvent(workflow_id=uuid.uuid4(), tenant_id="t"))
        # The handler's 2.5 s, in which a redelivery would come after the 1 s ack wait, and
        # then time for the replica handed it to finish.
        await asyncio.sleep(4.5)
    finally:
        for broker in replicas:
            await broker.stop()
    assert (len(seen) > 1) == redelivered and len(set(seen)) == 1


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


async def _dead_letters(broker: NatsBroker, consumer: str) -> asyncio.Queue[EventDeadLettered]:
    """A plain subscription to the dead letters of `consumer`, started before the test acts."""
    letters: asyncio.Queue[EventDeadLettered] = asyncio.Queue()

    async def on_letter(message: Msg) -> None:
        await letters.put(EventDeadLettered.model_validate_json(message.data))

    await broker.connection.subscribe(f"nexus.deadletter.{consumer}", cb=on_letter)
    return letters


async def test_a_malformed_message_is_dead_lettered_at_once_and_the_next_is_handled(
    nats_url: str,
) -> None:
    broker = create_broker(nats_url, "test", TracerProvider(), None, BrokerLink())
    consumer = f"test-poison-{uuid.uuid4().hex[:8]}"
    handled: asyncio.Queue[ProbeEvent] = asyncio.Queue()
    router = NatsRouter()

    @durable_subscriber(router, ProbeEvent, consumer, timeout=0.5)
    async def on_probe(event: ProbeEvent) -> None:
        await handled.put(event)

    broker.include_router(router)
    await broker.connect()
    await ensure_stream(broker)
    await broker.start()
    try:
        letters = await _dead_letters(broker, consumer)
        js = broker.connection.jetstream()
        await js.publish(ProbeEvent.subject, b"{}", stream=STREAM_NAME)
        good = ProbeEvent(workflow_id=uuid.uuid4(), tenant_id="t", note="after the poison")
        await publish_event(broker, good)
        letter = await asyncio.wait_for(letters.get(), timeout=10)
        assert await asyncio.wait_for(handled.get(), timeout=10) == good
    finally:
        await broker.stop()
    assert letter.kind == "malformed"
    assert letter.deliveries == 1
    assert letter.workflow_id is None  # a claim in a malformed message is not trusted
    assert letter.original_subject == ProbeEvent.subject
    assert letter.payload == "{}"
    assert "workflow_id" in letter.reason and "note" in letter.reason


async def test_a_handler_that_keeps_failing_is_retried_with_backoff_then_dead_lettered(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.bus.RETRY_DELAY_S", 0.1)
    monkeypatch.setattr("shared.bus.MAX_DELIVERIES", 4)
    broker = create_broker(nats_url, "test", TracerProvider(), None, BrokerLink())
    consumer = f"test-failing-{uuid.uuid4().hex[:8]}"
    attempts: list[float] = []
    router = NatsRouter()

    @durable_subscriber(router, FlakyEvent, consumer, timeout=0.5)
    async def on_flaky(event: FlakyEvent) -> None:
        attempts.append(time.monotonic())
        raise ConnectionError("the database is down")

    broker.include_router(router)
    await broker.connect()
    await ensure_stream(broker)
    await broker.start()
    try:
        letters = await _dead_letters(broker, consumer)
        sent = FlakyEvent(workflow_id=uuid.uuid4(), tenant_id="t-9")
        await publish_event(broker, sent)
        letter = await asyncio.wait_for(letters.get(), timeout=20)
        await asyncio.sleep(1.0)  # terminated: no delivery after the dead letter
    finally:
        await broker.stop()
    assert len(attempts) == 4
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:], strict=False)]
    assert gaps[0] >= 0.08 and gaps[1] >= 0.18 and gaps[2] >= 0.38  # 0.1, 0.2, 0.4 s
    assert letter.kind == "handler_failed"
    assert (letter.workflow_id, letter.tenant_id) == (sent.workflow_id, "t-9")
    assert letter.deliveries == 4
    assert "ConnectionError: the database is down" in letter.reason


def test_the_redelivery_delay_doubles_up_to_its_cap() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [
        RETRY_DELAY_S,
        2 * RETRY_DELAY_S,
        4 * RETRY_DELAY_S,
    ]
    assert retry_delay(50) == MAX_RETRY_DELAY_S


async def test_node_subjects_share_one_metric_series_whatever_the_node(nats_url: str) -> None:
    registry = CollectorRegistry()
    broker = create_broker(nats_url, "test", TracerProvider(), registry, BrokerLink())
    cluster = uuid.uuid4().hex[:8]
    beats: asyncio.Queue[dict[str, str]] = asyncio.Queue()

    @broker.subscriber(f"nodes.{cluster}.*.heartbeat")
    async def on_beat(body: dict[str, str]) -> None:
        await beats.put(body)

    await broker.start()
    try:
        for node in ("n1", "n2", "n3"):
            await broker.publish({"node_id": node}, f"nodes.{cluster}.{node}.heartbeat")
        for _ in range(3):
            await asyncio.wait_for(beats.get(), timeout=10)
    finally:
        await broker.stop()
    labels = {
        sample.labels.get("handler")
        for family in registry.collect()
        for sample in family.samples
        if "handler" in sample.labels
    }
    assert labels == {"nodes.*.*.heartbeat"}
