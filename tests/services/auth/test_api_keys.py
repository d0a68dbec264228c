"""API keys: shown once, stored hashed, limited to their scopes, accepted by /auth/me until
revoked or expired."""

from __future__ import annotations

import hashlib
import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.security import API_SCOPES
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
    assert me.json() == {**user, "kind": "api_key", "scopes": list(API_SCOPES)}

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
        ({"name": "ok", "scopes": ["all"]}, "scopes.0"),
        ({"name": "ok", "scopes": []}, "scopes"),
        ({"name": "ok", "scopes": "models:predict"}, "scopes"),
        ({"name": "ok", "scopes": ["models:predict", "models:predict"]}, "scopes"),
        ({"name": "ok", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "ok", "expires_in_days": 3651}, "expires_in_days"),
        ({"name": "ok", "expires_in_days": "soon"}, "expires_in_days"),
        ({"name": "ok", "owner": "someone"}, "owner"),
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


async def test_a_key_may_do_only_what_its_scopes_say(client: httpx.AsyncClient, email: str) -> None:
    user, headers = await _user_token(client, email)
    body = {"name": "predictions only", "scopes": ["models:predict"]}
    created = await client.post("/auth/api-keys", json=body, headers=headers)
    assert created.status_code == 201, created.text
    assert created.json()["scopes"] == ["models:predict"]
    key = bearer(created.json()["key"])

    me = (await client.get("/auth/me", headers=key)).json()
    assert me == {**user, "kind": "api_key", "scopes": ["models:predict"]}
    (listed,) = (await client.get("/auth/api-keys", headers=headers)).json()
    assert listed["scopes"] == ["models:predict"] and listed["expires_at"] is None

    # A key cannot make a key that may do more than it may.
    wider = {"name": "wider", "scopes": ["models:predict", "memory:write"]}
    refused = await client.post("/auth/api-keys", json=wider, headers=key)
    assert refused.status_code == 403 and "memory:write" in refused.json()["detail"]
    assert len((await client.get("/auth/api-keys", headers=headers)).json()) == 1


async def test_an_expired_key_stops_working(
    client: httpx.AsyncClient, engine: AsyncEngine, email: str
) -> None:
    _, headers = await _user_token(client, email)
    body = {"name": "a day", "expires_in_days": 1}
    created = (await client.post("/auth/api-keys", json=body, headers=headers)).json()
    assert created["expires_at"] is not None
    assert (await client.get("/auth/me", headers=bearer(created["key"]))).status_code == 200

    async with engine.begin() as conn:  # the day has passed
        passed = "UPDATE auth.api_keys SET expires_at = now() - interval '1 s' WHERE id = :id"
        await conn.execute(text(passed), {"id": created["id"]})
    expired = await client.get("/auth/me", headers=bearer(created["key"]))
    assert expired.status_code == 401
