"""The memory service stores the keys a phase emitted (`nexus.memory.written`), in order,
and skips a key the HTTP API would refuse instead of failing the whole event."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import nats

from shared.bus import STREAM_NAME
from shared.contracts import MemoryWritten
from tests.support import as_service, memory_keys


async def _publish(nats_url: str, event: MemoryWritten) -> None:
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(
            event.subject,
            event.model_dump_json().encode(),
            stream=STREAM_NAME,
            headers={"Nats-Msg-Id": str(event.event_id)},
        )
    finally:
        await nc.close()


async def test_written_keys_are_stored_for_the_events_tenant_and_bad_keys_skipped(
    memory_url: str, nats_url: str, internal_token: str, tenant_id: str
) -> None:
    workflow_id = uuid.uuid4()
    headers = as_service(internal_token, tenant_id)
    first = MemoryWritten(
        workflow_id=workflow_id,
        tenant_id=tenant_id,
        keys={"neural/a": {"n": 1}, "neural/../escape": 1, "neural/b": [1, 2]},
    )
    second = MemoryWritten(workflow_id=workflow_id, tenant_id=tenant_id, keys={"neural/a": 2})
    await _publish(nats_url, first)
    await _publish(nats_url, second)

    async with httpx.AsyncClient(base_url=memory_url, headers=headers) as client:
        for _ in range(100):
            history = await client.get(f"/memory/{workflow_id}/neural/a/history")
            if history.status_code == 200 and len(history.json()) == 2:
                break
            await asyncio.sleep(0.1)
        assert [change["value"] for change in history.json()] == [{"n": 1}, 2]
    stored = await memory_keys(memory_url, headers, workflow_id, {"neural/a", "neural/b"})
    assert stored == {"neural/a": 2, "neural/b": [1, 2]}

    other = as_service(internal_token, f"{tenant_id}-other")
    assert await memory_keys(memory_url, other, workflow_id, set(), timeout=0) == {}
