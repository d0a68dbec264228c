"""The NATS bus: a FastStream `NatsBroker` with tracing and metrics middlewares, the
JetStream stream `NEXUS` that captures `nexus.>`, and durable pull subscribers.

Create the broker inside an application's lifespan (never at import time), register the
service's router on it, then start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from faststream.message import StreamMessage
from faststream.nats import JStream, NatsBroker, NatsRouter, PullSub
from faststream.nats.annotations import JsClient, NatsMessage
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus.provider import NatsMetricsSettingsProvider
from faststream.prometheus import ConsumeAttrs
from faststream.prometheus.middleware import PrometheusMiddleware
from nats.aio.msg import Msg
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError
from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from shared.contracts import Event, EventDeadLettered, subject_of
from shared.contracts.bus import DeadLetterKind
from shared.errors import summarize_validation_errors
from shared.subjects import NODE_HEARTBEAT_SUBJECT, NODE_TASK_SUBJECT, STREAM_NAME

__all__ = ["NODE_HEARTBEAT_SUBJECT", "NODE_TASK_SUBJECT", "STREAM_NAME"]

EventT = TypeVar("EventT", bound=Event)

# Events are the workflow's audit trail; keep a week of them, bounded in size.
STREAM_CONFIG = StreamConfig(
    name=STREAM_NAME,
    subjects=["nexus.>"],
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    max_age=7 * 24 * 3600,
    max_bytes=1024 * 1024 * 1024,
    discard=DiscardPolicy.OLD,
    duplicate_window=120,
)
# Declared by `ensure_stream` at start-up, not by FastStream: its declaration is a one-shot
# flag on this shared object, which would skip every broker after the first in a process.
NEXUS_STREAM = JStream(STREAM_NAME, declare=False)


class _PatternLabelled(NatsMetricsSettingsProvider):
    """Labels a consumed message by the subject pattern of a node subject (which names its
    cluster and node), not the subject itself: one metric series per subscription instead
    of one more for every node ever started."""

    def get_consume_attrs_from_message(self, msg: StreamMessage[Msg]) -> ConsumeAttrs:
        attrs = super().get_consume_attrs_from_message(msg)
        attrs["destination_name"] = metric_subject(attrs["destination_name"])
        return attrs


def metric_subject(subject: str) -> str:
    """`nodes.<cluster>.<node>.heartbeat` -> `nodes.*.*.heartbeat`; other subjects as they are
    (theirs are a fixed set)."""
    tokens = subject.split(".")
    if tokens[0] != "nodes" or len(tokens) < 3:
        return subject
    return ".".join([tokens[0], *("*" for _ in tokens[1:-1]), tokens[-1]])


def _metrics_settings(msg: Msg | Sequence[Msg] | None) -> NatsMetricsSettingsProvider | None:
    # Pull subscribers here take one message at a time; KV and object-store watches none.
    return _PatternLabelled() if isinstance(msg, Msg) or msg is None else None


class _BoundedPrometheusMiddleware(PrometheusMiddleware[Msg | Sequence[Msg], Any]):
    """FastStream's NATS metrics middleware (NatsPrometheusMiddleware, which only picks the
    settings provider) with node subjects labelled by their pattern."""

    def __init__(self, *, registry: CollectorRegistry, app_name: str) -> None:
        super().__init__(
            settings_provider_factory=_metrics_settings,  # type: ignore[arg-type]
            registry=registry,
            app_name=app_name,
        )


@dataclass
class BrokerLink:
    """Whether this process is connected to NATS now, and since when (monotonic): a process
    cut off from the broker, or back on it only just now, must not take the heartbeats it
    could not hear for the silence of the nodes that sent them."""

    connected: bool = True
    since: float = field(default_factory=time.monotonic)

    async def on_disconnected(self) -> None:
        self.connected, self.since = False, time.monotonic()

    async def on_reconnected(self) -> None:
        self.connected, self.since = True, time.monotonic()

    def heard_for(self) -> float:
        """Seconds this process has been able to hear the broker without a break (0 when
        it cannot now)."""
        return time.monotonic() - self.since if self.connected else 0.0


def create_broker(
    nats_url: str,
    service: str,
    tracer_provider: TracerProvider | None,
    metrics_registry: CollectorRegistry | None,
    link: BrokerLink,
) -> NatsBroker:
    middlewares: list[Any] = [NatsTelemetryMiddleware(tracer_provider=tracer_provider)]
    if metrics_registry is not None:
        middlewares.append(
            _BoundedPrometheusMiddleware(registry=metrics_registry, app_name=f"nexus_{service}")
        )
    # FastStream logs every message at INFO by default, which costs more than handling it.
    logger = logging.getLogger(f"nexus.{service}.bus")
    return NatsBroker(
        nats_url,
        middlewares=middlewares,
        logger=logger,
        log_level=logging.DEBUG,
        graceful_timeout=15.0,
        max_reconnect_attempts=-1,
        # nats-py waits 2 s between reconnection attempts by default; a restarted broker is
        # back within a second, and every moment away is a gap in the heartbeats heard.
        reconnect_time_wait=0.25,  # type: ignore[arg-type]  # FastStream says int; nats-py takes float
        disconnected_cb=link.on_disconnected,
        reconnected_cb=link.on_reconnected,
    )


async def ensure_stream(broker: NatsBroker) -> None:
    js = broker.connection.jetstream()
    try:
        await js.stream_info(STREAM_NAME)
    except NotFoundError:
        await js.add_stream(STREAM_CONFIG)


# Prepended to every durable consumer name. Empty in a deployment; a test run sets its own
# so that it neither competes with nor inherits the backlog of another run on a shared NATS.
_consumer_prefix = ""


def set_consumer_prefix(prefix: str) -> None:
    global _consumer_prefix
    _consumer_prefix = prefix


def consumer_name(consumer: str) -> str:
    """The durable name JetStream knows a consumer by (with this deployment's prefix)."""
    return f"{_consumer_prefix}{consumer}"


# A handler that fails (a dependency down, say) is redelivered with a growing delay, so an
# outage does not become a hot redelivery loop, and a bounded number of times: the message is
# then dead-lettered (EventDeadLettered) and terminated, and its workflow fails with the reason.
# With these values a consumer keeps trying for about half a minute (1+2+4+8+16 s), long
# enough for Postgres or a peer service to restart.
RETRY_DELAY_S = 1.0
MAX_RETRY_DELAY_S = 30.0
MAX_DELIVERIES = 6
# How long JetStream waits for a delivered message's ack before it delivers it again: how soon
# the event a service was handling when it died is handled by its restart (or a replica).
# A handler that runs longer tells JetStream it is still at work every ACK_PROGRESS_S.
ACK_WAIT_S = 10.0
ACK_PROGRESS_S = 3.0
# The start of a dead-lettered body kept for the operator; bodies can be large (a spec).
_DEAD_LETTER_PAYLOAD_CHARS = 4096


def retry_delay(deliveries: int) -> float:
    """The wait before the next delivery of a message that failed `deliveries` times."""
    return min(RETRY_DELAY_S * 2 ** (deliveries - 1), MAX_RETRY_DELAY_S)


def durable_subscriber(
    router: NatsRouter | NatsBroker,
    event_type: type[EventT],
    consumer: str,
    *,
    subject: str | None = None,
    timeout: float = 5.0,
    dead_letters: bool = True,
) -> Callable[[Callable[[EventT], Awaitable[None]]], Any]:
    """A durable pull consumer of `event_type` on the NEXUS stream.

    The message is parsed here: one that is not a valid `event_type` (not JSON, a missing
    field, a spec that does not validate) is dead-lettered and terminated at once, since no
    retry can make it valid. The handler acks after its commit; an exception naks with a
    growing delay so JetStream redelivers later (handlers are idempotent on event_id), up to
    MAX_DELIVERIES, after which the message is dead-lettered too. `dead_letters=False` is for
    the consumer of dead letters itself, which must not feed itself."""
    config: dict[str, Any] = {
        # The server's own bound, one past ours: a backstop should our last attempt be lost
        # with its process before it could dead-letter the message.
        "max_deliver": MAX_DELIVERIES + 1,
        "ack_wait": ACK_WAIT_S,
    }
    if _consumer_prefix:
        config["inactive_threshold"] = 600.0  # a test consumer is removed when idle
    subscriber = router.subscriber(
        subject or event_type.subject,
        stream=NEXUS_STREAM,
        durable=consumer_name(consumer),
        # A consumer created for the first time starts at new events rather than replaying
        # the stream's week of history; once created, it resumes where it stopped.
        deliver_policy=DeliverPolicy.NEW,
        config=ConsumerConfig(**config),
        pull_sub=PullSub(batch_size=1, timeout=timeout),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )

    def register(handler: Callable[[EventT], Awaitable[None]]) -> Any:
        log = logging.getLogger(handler.__module__)

        async def dead_letter(
            message: NatsMessage,
            js: JsClient,
            kind: DeadLetterKind,
            reason: str,
            event: Event | None = None,
        ) -> None:
            if not dead_letters:
                return
            letter = EventDeadLettered(
                workflow_id=event.workflow_id if event is not None else None,
                tenant_id=event.tenant_id if event is not None else "",
                consumer=consumer,
                original_subject=message.raw_message.subject,
                kind=kind,
                reason=reason[:2000],
                deliveries=deliveries_of(message),
                payload=message.body[:_DEAD_LETTER_PAYLOAD_CHARS].decode(errors="replace"),
            )
            try:
                await js.publish(
                    subject_of(letter),
                    letter.model_dump_json().encode(),
                    stream=STREAM_NAME,
                    headers={"Nats-Msg-Id": str(letter.event_id)},
                    timeout=10,
                )
            except Exception as exc:  # the message is terminated anyway: nothing waits on it
                log.error("%s could not record a dead letter: %s", consumer, exc)

        async def parse_then_handle(message: NatsMessage, js: JsClient) -> None:
            try:
                event = event_type.model_validate_json(message.body)
            except ValidationError as exc:
                problems = summarize_validation_errors([dict(e) for e in exc.errors()])
                reason = f"not a valid {event_type.__name__}: {problems}"
                log.warning("%s dead-lettered a malformed message: %s", consumer, reason)
                await dead_letter(message, js, "malformed", reason)
                raise RejectMessage from exc
            try:
                async with _in_progress_while_handled(message):
                    await handler(event)
            except HandlerException:
                raise
            except Exception as exc:
                deliveries = deliveries_of(message)
                if deliveries >= MAX_DELIVERIES:
                    reason = f"{consumer} failed {deliveries} times: {type(exc).__name__}: {exc}"
                    log.exception("%s; dead-lettered", reason)
                    await dead_letter(message, js, "handler_failed", reason, event)
                    raise RejectMessage from exc
                delay = retry_delay(deliveries)
                log.exception("%s failed; redelivery in %.0fs", consumer, delay)
                raise NackMessage(delay=delay) from exc

        parse_then_handle.__name__ = handler.__name__
        parse_then_handle.__qualname__ = handler.__qualname__
        return subscriber(parse_then_handle)

    return register


@contextlib.asynccontextmanager
async def _in_progress_while_handled(message: NatsMessage) -> AsyncIterator[None]:
    """While the handler runs, tell JetStream every ACK_PROGRESS_S that the message is being
    worked on, so a long handler is not delivered a second time meanwhile."""

    async def keep_telling() -> None:
        while True:
            await asyncio.sleep(ACK_PROGRESS_S)
            with contextlib.suppress(Exception):  # a lost connection: redelivery then is right
                await message.raw_message.in_progress()

    telling = asyncio.create_task(keep_telling())
    try:
        yield
    finally:
        telling.cancel()


def deliveries_of(message: NatsMessage) -> int:
    """How many times JetStream has delivered this message, this delivery included."""
    metadata = message.raw_message.metadata
    return max(1, int(metadata.num_delivered or 1))


def publisher_for(broker: NatsBroker) -> Callable[..., Any]:
    """The publish function the outbox uses: JetStream publish, awaited for its ack."""

    async def publish(subject: str, payload: dict[str, Any], headers: dict[str, str]) -> None:
        await broker.publish(payload, subject, headers=headers, stream=STREAM_NAME, timeout=10)

    return publish


async def publish_event(broker: NatsBroker, event: Event) -> None:
    """Publish outside a transaction (nodes, external systems): straight to JetStream."""
    await broker.publish(
        event.model_dump(mode="json"),
        subject_of(event),
        headers={"Nats-Msg-Id": str(event.event_id)},
        stream=STREAM_NAME,
        timeout=10,
    )
