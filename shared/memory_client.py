"""The client services use to read and write workflow memory keys in the memory service."""

from __future__ import annotations

from typing import Any

import httpx

from shared.security import internal_headers


class MemoryClient:
    def __init__(self, base_url: str, internal_token: str, client: httpx.AsyncClient) -> None:
        self._base = base_url.rstrip("/")
        self._token = internal_token
        self._client = client

    async def put(self, tenant_id: str, namespace: str, key: str, value: Any) -> None:
        response = await self._client.put(
            f"{self._base}/memory/{namespace}/{key}",
            json={"value": value},
            headers=internal_headers(self._token, tenant_id),
        )
        response.raise_for_status()

    async def put_many(self, tenant_id: str, namespace: str, values: dict[str, Any]) -> None:
        for key, value in values.items():
            await self.put(tenant_id, namespace, key, value)

    async def get(self, tenant_id: str, namespace: str, key: str) -> Any:
        response = await self._client.get(
            f"{self._base}/memory/{namespace}/{key}",
            headers=internal_headers(self._token, tenant_id),
        )
        response.raise_for_status()
        return response.json()["value"]
