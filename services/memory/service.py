"""Rules every stored key and value meets, and storing a workflow's memory keys as the
phases report them (`MemoryWritten` events)."""

from __future__ import annotations

import json
import logging
import re

from services.memory.repository import MemoryRepository
from services.memory.schemas import KEY_PATTERN
from shared.contracts import MemoryWritten
from shared.db import UnitOfWork

logger = logging.getLogger(__name__)

KEY_PATTERN_RE = re.compile(KEY_PATTERN)


async def store_written_keys(uow: UnitOfWork, event: MemoryWritten, max_value_bytes: int) -> None:
    """Every key of the event, in order, in its workflow's namespace for its tenant; each put
    makes a new version. A key the HTTP API would refuse is skipped with a warning."""
    repository = MemoryRepository(uow.session, event.tenant_id)
    namespace = str(event.workflow_id)
    for key, value in event.keys.items():
        problem = key_problem(key) or value_problem(value, max_value_bytes)
        if problem is not None:
            logger.warning("key %r of workflow %s not stored: %s", key, namespace, problem)
            continue
        await repository.put(namespace, key, value)


def key_problem(key: str) -> str | None:
    if not KEY_PATTERN_RE.fullmatch(key):
        return f"does not match {KEY_PATTERN}"
    if ".." in key.split("/") or "//" in key or key.endswith("/"):
        return "empty or '..' path segment"
    return None


def value_problem(value: object, max_value_bytes: int) -> str | None:
    if len(json.dumps(value)) > max_value_bytes:
        return f"value is larger than {max_value_bytes} bytes"
    return None
