"""API keys: shown once, stored hashed, accepted by /auth/me until revoked."""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.services.auth.conftest import bearer, login, register


async def _user_token(
    client: httpx.AsyncClient, email: str
) -> tuple[dict[str, str], dict[str, str]]:
    user = await register(client, email)
    return user, bearer((await login(client, email))["access_token"])


async def test_api_key_lifecycle(
    client: httpx.AsyncClient, engine: AsyncEngine, email: str
) -> None:
    user, headers = await _user_token(client, email)

    created = await client.post("/auth/api-keys", json={"name": "ci runner"}, headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert key.startswith("nxk_") and len(key) == 4 + 43  # 32 random bytes, url-safe base64
    assert body["prefix"] == key[:8] and body["name"] == "ci runner"

    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT key_hash, prefix FROM auth.api_keys WHERE id = :id"),
                {"id": body["id"]},
            )
        ).one()
    assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()  # never the key itself

    me = await client.get("/auth/me", headers=bearer(key))
    assert me.status_code == 200
    assert me.json() == {**user, "kind": "api_key"}

    listed = await client.get("/auth/api-keys", headers=headers)
    (entry,) = listed.json()
    assert entry["id"] == body["id"] and "key" not in entry and entry["revoked_at"] is None
    assert entry["last_used_at"] is not None

    revoked = await client.delete(f"/auth/api-keys/{body['id']}", headers=headers)
    assert revoked.status_code == 204
    assert (await client.get("/auth/me", headers=bearer(key))).status_code == 401
    (entry,) = (await client.get("/auth/api-keys", headers=headers)).json()
    assert entry["revoked_at"] is not None


async def test_an_unknown_api_key_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/me", headers=bearer("nxk_" + "A" * 43))
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid or revoked API key"


async def test_keys_of_another_user_cannot_be_seen_or_revoked(
    client: httpx.AsyncClient, email: str
) -> None:
    _, alice = await _user_token(client, "alice-" + email)
    _, mallory = await _user_token(client, "mallory-" + email)
    created = (await client.post("/auth/api-keys", json={"name": "a"}, headers=alice)).json()

    assert (await client.get("/auth/api-keys", headers=mallory)).json() == []
    response = await client.delete(f"/auth/api-keys/{created['id']}", headers=mallory)
    assert response.status_code == 404
    assert (await client.get("/auth/me", headers=bearer(created["key"]))).status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "bell\x07"}, "name"),
        ({"name": "ok", "scopes": ["all"]}, "scopes"),
    ],
)
async def test_bad_api_key_requests_are_422_and_create_nothing(
    client: httpx.AsyncClient, email: str, body: dict[str, object], field: str
) -> None:
    _, headers = await _user_token(client, email)
    response = await client.post("/auth/api-keys", json=body, headers=headers)
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["detail"]]
    assert (await client.get("/auth/api-keys", headers=headers)).json() == []


async def test_revoking_needs_a_valid_key_id(client: httpx.AsyncClient, email: str) -> None:
    _, headers = await _user_token(client, email)
    bad = await client.delete("/auth/api-keys/not-a-uuid", headers=headers)
    assert bad.status_code == 422
    assert "path.key_id" in [d["field"] for d in bad.json()["detail"]]
    missing = await client.delete(f"/auth/api-keys/{uuid.uuid4()}", headers=headers)
    assert missing.status_code == 404


async def test_managing_keys_needs_credentials(client: httpx.AsyncClient) -> None:
    assert (await client.get("/auth/api-keys")).status_code == 401
    assert (await client.post("/auth/api-keys", json={"name": "x"})).status_code == 401
