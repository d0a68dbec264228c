"""Registering, logging in and /auth/me, including every bad input the routes refuse."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth.passwords import Passwords
from shared.security import API_SCOPES
from tests.services.auth.conftest import PASSWORD, bearer, login, register, users_matching
from tests.support import as_service


async def test_register_then_token_then_me(client: httpx.AsyncClient, email: str) -> None:
    user = await register(client, email.upper())
    assert user["email"] == email  # stored lower-cased
    assert user["tenant_id"].startswith("t-")

    tokens = await login(client, email.upper())
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 15 * 60

    me = await client.get("/auth/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    assert me.json() == {**user, "kind": "user", "scopes": list(API_SCOPES)}


async def test_first_user_creates_the_named_tenant(
    client: httpx.AsyncClient, email: str, tenant_id: str
) -> None:
    user = await register(client, email, tenant=tenant_id)
    assert user["tenant_id"] == tenant_id


async def test_an_existing_tenant_cannot_be_joined(
    client: httpx.AsyncClient, engine: AsyncEngine, email: str, tenant_id: str, internal_token: str
) -> None:
    await register(client, email, tenant=tenant_id)
    before = await users_matching(engine, tenant_id, ["second@example.com"])
    # Not even with the internal token: it cannot put users into someone's tenant.
    response = await client.post(
        "/auth/register",
        json={"email": "second@example.com", "password": PASSWORD, "tenant": tenant_id},
        headers=as_service(internal_token, tenant_id),
    )
    assert response.status_code == 409
    assert response.json()["detail"][0]["field"] == "tenant"
    assert await users_matching(engine, tenant_id, ["second@example.com"]) == before


BAD_REGISTRATIONS: list[tuple[str, Any, str | None]] = [
    ("bad email", {"email": "not-an-email", "password": PASSWORD}, "email"),
    ("email without domain dot", {"email": "a@localhost", "password": PASSWORD}, "email"),
    ("email too long", {"email": "a" * 250 + "@x.io", "password": PASSWORD}, "email"),
    ("missing email", {"password": PASSWORD}, "email"),
    ("short password", {"email": "NEW", "password": "short"}, "password"),
    ("long password", {"email": "NEW", "password": "p" * 129}, "password"),
    ("tenant upper case", {"email": "NEW", "password": PASSWORD, "tenant": "Acme"}, "tenant"),
    ("tenant leading dash", {"email": "NEW", "password": PASSWORD, "tenant": "-acme"}, "tenant"),
    ("tenant too short", {"email": "NEW", "password": PASSWORD, "tenant": "a"}, "tenant"),
    ("tenant not a string", {"email": "NEW", "password": PASSWORD, "tenant": 7}, "tenant"),
    ("unknown field", {"email": "NEW", "password": PASSWORD, "tenant_id": "x1"}, "tenant_id"),
    ("not json", "email=x", None),  # a JSON decode error has no field to name
]


@pytest.mark.parametrize(
    ("body", "field"),
    [(b, f) for _, b, f in BAD_REGISTRATIONS],
    ids=[n for n, _, _ in BAD_REGISTRATIONS],
)
async def test_bad_registration_is_422_naming_the_field_and_stores_nothing(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    email: str,
    tenant_id: str,
    body: Any,
    field: str | None,
) -> None:
    await register(client, "existing-" + email, tenant=tenant_id)
    new_email = "new-" + email
    if isinstance(body, dict) and body.get("email") == "NEW":
        body = {**body, "email": new_email}
    before = await users_matching(engine, tenant_id, [new_email])

    if isinstance(body, str):
        response = await client.post(
            "/auth/register", content=body, headers={"Content-Type": "application/json"}
        )
    else:
        response = await client.post("/auth/register", json=body)

    assert response.status_code == 422
    assert set(response.json()) == {"error", "detail"}
    if field is not None:
        assert field in [d["field"] for d in response.json()["detail"]]
    assert await users_matching(engine, tenant_id, [new_email]) == before


async def test_duplicate_email_is_409_and_keeps_the_first_account(
    client: httpx.AsyncClient, engine: AsyncEngine, email: str
) -> None:
    user = await register(client, email)
    before = await users_matching(engine, user["tenant_id"], [email])

    response = await client.post(
        "/auth/register", json={"email": email.upper(), "password": "another password"}
    )
    assert response.status_code == 409
    assert response.json()["detail"][0]["field"] == "email"
    assert await users_matching(engine, user["tenant_id"], [email]) == before
    await login(client, email)  # the original password still works


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"password": PASSWORD}, "username"),
        ({"username": "EMAIL"}, "password"),
        (
            {"username": "EMAIL", "password": PASSWORD, "grant_type": "client_credentials"},
            "grant_type",
        ),
        ({"username": "EMAIL", "password": "p" * 129}, "password"),
    ],
)
async def test_bad_token_form_is_422_naming_the_field(
    client: httpx.AsyncClient, engine: AsyncEngine, email: str, form: dict[str, str], field: str
) -> None:
    user = await register(client, email)
    before = await users_matching(engine, user["tenant_id"], [email])
    form = {k: email if v == "EMAIL" else v for k, v in form.items()}
    response = await client.post("/auth/token", data=form)
    assert response.status_code == 422
    assert field in [d["field"] for d in response.json()["detail"]]
    assert await users_matching(engine, user["tenant_id"], [email]) == before


async def test_wrong_password_and_unknown_user_get_the_same_401(
    client: httpx.AsyncClient, engine: AsyncEngine, email: str
) -> None:
    user = await register(client, email)
    before = await users_matching(engine, user["tenant_id"], [email])
    wrong = await client.post("/auth/token", data={"username": email, "password": "wrong password"})
    unknown = await client.post(
        "/auth/token", data={"username": "nobody-" + email, "password": PASSWORD}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "error": "unauthorized",
            "detail": "incorrect email or password",
        }
    )
    assert wrong.headers["WWW-Authenticate"] == "Bearer"
    assert await users_matching(engine, user["tenant_id"], [email]) == before


async def test_an_unknown_user_still_costs_a_hash_verification() -> None:
    verified: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> bool:
            verified.append(str(hash))
            return super().verify(hash, password)

    passwords = Passwords(Counting())
    assert await passwords.verify(None, PASSWORD) is False
    assert len(verified) == 1  # the dummy hash was checked, as long as a real one would take


async def test_a_disabled_account_cannot_log_in_or_use_its_tokens(
    client: httpx.AsyncClient, engine: AsyncEngine, email: str
) -> None:
    await register(client, email)
    tokens = await login(client, email)
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE auth.users SET disabled = true WHERE email = :e"), {"e": email}
        )

    assert (
        await client.post("/auth/token", data={"username": email, "password": PASSWORD})
    ).status_code == 401
    assert (await client.get("/auth/me", headers=bearer(tokens["access_token"]))).status_code == 401
    refreshed = await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 401


async def test_internal_token_identifies_no_user(
    client: httpx.AsyncClient, internal_token: str, tenant_id: str
) -> None:
    me = await client.get("/auth/me", headers=as_service(internal_token, tenant_id))
    assert me.status_code == 401
    keys = await client.post(
        "/auth/api-keys", json={"name": "ci"}, headers=as_service(internal_token, tenant_id)
    )
    assert keys.status_code == 401


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic abc"}]
)
async def test_me_without_valid_credentials_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/auth/me", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["service"] == "auth"
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text


async def test_two_racing_registrations_for_one_tenant_create_one_user(
    client: httpx.AsyncClient, engine: AsyncEngine, email: str, tenant_id: str
) -> None:
    bodies = [
        {"email": f"{who}-{email}", "password": PASSWORD, "tenant": tenant_id} for who in ("a", "b")
    ]
    responses = await asyncio.gather(*(client.post("/auth/register", json=b) for b in bodies))
    assert sorted(r.status_code for r in responses) == [201, 409]
    assert len(await users_matching(engine, tenant_id, [])) == 1
