"""NATS handlers of the memory service: the keys each phase wrote, stored once its
transaction committed (the event comes from the phase owner's outbox)."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.memory.service import store_written_keys
from services.memory.state import MemoryContext
from shared.bus import durable_subscriber
from shared.contracts import MemoryWritten

CONSUMER = "memory-written"


def create_handlers(context: MemoryContext) -> NatsRouter:
    router = NatsRouter()

    @durable_subscriber(router, MemoryWritten, CONSUMER)
    async def on_memory_written(event: MemoryWritten) -> None:
        async with context.unit_of_work() as uow:
            if await uow.first_time(CONSUMER, event.event_id):
                await store_written_keys(uow, event, context.settings.max_value_bytes)

    return router
