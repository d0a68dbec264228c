"""The NATS bus: a FastStream `NatsBroker` with tracing and metrics middlewares, the
JetStream stream `NEXUS` that captures `nexus.>`, and durable pull subscribers.

Create the broker inside an application's lifespan (never at import time), register the
service's router on it, then start it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream import AckPolicy
from faststream.exceptions import HandlerException, NackMessage, RejectMessage
from faststream.nats import JStream, NatsBroker, NatsRouter, PullSub
from faststream.nats.annotations import NatsMessage
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.prometheus import NatsPrometheusMiddleware
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

from shared.contracts import Event, subject_of
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


def create_broker(
    nats_url: str,
    service: str,
    tracer_provider: TracerProvider | None,
    metrics_registry: CollectorRegistry | None,
) -> NatsBroker:
    middlewares: list[Any] = [NatsTelemetryMiddleware(tracer_provider=tracer_provider)]
    if metrics_registry is not None:
        middlewares.append(
            NatsPrometheusMiddleware(registry=metrics_registry, app_name=f"nexus_{service}")
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


# A handler that fails (a dependency down, say) is retried after this delay rather than at
# once, so an outage does not become a hot redelivery loop.
RETRY_DELAY_S = 5.0


def durable_subscriber(
    router: NatsRouter | NatsBroker,
    event_type: type[EventT],
    consumer: str,
    *,
    subject: str | None = None,
    timeout: float = 5.0,
) -> Callable[[Callable[[EventT], Awaitable[None]]], Any]:
    """A durable pull consumer of `event_type` on the NEXUS stream.

    The message is parsed here: one that is not a valid `event_type` (not JSON, a missing
    field, a spec that does not validate) is rejected once and never redelivered, since no
    retry can make it valid. The handler acks after its commit; an exception naks with a
    delay so JetStream redelivers later (handlers are idempotent on event_id)."""
    subscriber = router.subscriber(
        subject or event_type.subject,
        stream=NEXUS_STREAM,
        durable=consumer_name(consumer),
        # A consumer created for the first time starts at new events rather than replaying
        # the stream's week of history; once created, it resumes where it stopped.
        deliver_policy=DeliverPolicy.NEW,
        # A prefixed (test) consumer is removed by the server after ten idle minutes.
        config=ConsumerConfig(inactive_threshold=600.0) if _consumer_prefix else None,
        pull_sub=PullSub(batch_size=1, timeout=timeout),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )

    def register(handler: Callable[[EventT], Awaitable[None]]) -> Any:
        log = logging.getLogger(handler.__module__)

        async def parse_then_handle(message: NatsMessage) -> None:
            try:
                event = event_type.model_validate_json(message.body)
            except ValidationError as exc:
                problems = summarize_validation_errors([dict(e) for e in exc.errors()])
                log.warning(
                    "%s rejected a malformed %s: %s", consumer, event_type.__name__, problems
                )
                raise RejectMessage from exc
            try:
                await handler(event)
            except HandlerException:
                raise
            except Exception as exc:
                log.exception("%s failed; redelivery in %.0fs", consumer, RETRY_DELAY_S)
                raise NackMessage(delay=RETRY_DELAY_S) from exc

        parse_then_handle.__name__ = handler.__name__
        parse_then_handle.__qualname__ = handler.__qualname__
        return subscriber(parse_then_handle)

    return register


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
