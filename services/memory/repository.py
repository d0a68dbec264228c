"""All SQL of the memory service. Domain code flushes; the request commits."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.memory.models import MemoryChange, MemoryEntry


class MemoryRepository:
    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        self._session = session
        self._tenant = tenant_id

    async def get(self, namespace: str, key: str) -> MemoryEntry | None:
        return await self._session.get(MemoryEntry, (self._tenant, namespace, key))

    async def search(
        self, namespace: str, prefix: str | None, query: str | None, limit: int
    ) -> list[MemoryEntry]:
        stmt = select(MemoryEntry).where(
            MemoryEntry.tenant_id == self._tenant, MemoryEntry.namespace == namespace
        )
        if prefix:
            stmt = stmt.where(MemoryEntry.key.startswith(prefix, autoescape=True))
        if query:
            needle = f"%{_escape_like(query)}%"
            stmt = stmt.where(
                or_(
                    MemoryEntry.key.ilike(needle, escape="\\"),
                    cast(MemoryEntry.value, String).ilike(needle, escape="\\"),
                )
            )
        result = await self._session.scalars(stmt.order_by(MemoryEntry.key).limit(limit))
        return list(result)

    async def put(self, namespace: str, key: str, value: Any) -> MemoryEntry:
        now = datetime.now(UTC)
        # Lock the row so two concurrent writers produce consecutive versions.
        entry = await self._session.get(
            MemoryEntry, (self._tenant, namespace, key), with_for_update=True
        )
        if entry is None:
            entry = MemoryEntry(
                tenant_id=self._tenant,
                namespace=namespace,
                key=key,
                value=value,
                version=1,
                created_at=now,
                updated_at=now,
            )
            self._session.add(entry)
        else:
            entry.value = value
            entry.version += 1
            entry.updated_at = now
        self._record(namespace, key, entry.version, "put", value, now)
        await self._session.flush()
        return entry

    async def delete(self, namespace: str, key: str) -> bool:
        entry = await self._session.get(
            MemoryEntry, (self._tenant, namespace, key), with_for_update=True
        )
        if entry is None:
            return False
        self._record(namespace, key, entry.version + 1, "delete", None, datetime.now(UTC))
        await self._session.delete(entry)
        await self._session.flush()
        return True

    async def history(self, namespace: str, key: str) -> list[MemoryChange]:
        result = await self._session.scalars(
            select(MemoryChange)
            .where(
                MemoryChange.tenant_id == self._tenant,
                MemoryChange.namespace == namespace,
                MemoryChange.key == key,
            )
            .order_by(MemoryChange.id)
        )
        return list(result)

    def _record(
        self, namespace: str, key: str, version: int, operation: str, value: Any, at: datetime
    ) -> None:
        self._session.add(
            MemoryChange(
                tenant_id=self._tenant,
                namespace=namespace,
                key=key,
                version=version,
                operation=operation,
                value=value,
                changed_at=at,
            )
        )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
