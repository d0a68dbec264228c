"""Fixtures for the auth service's tests: the app in-process against real Postgres and NATS."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.auth.app import create_app
from services.auth.settings import AuthSettings
from shared.db import create_engine
from shared.settings import normalize_database_url
from tests.support import running

PASSWORD = "correct horse battery"


# One app per module: starting one (engine, NATS, argon2 warm-up) costs more than most tests,
# and each test uses its own email and tenant.
@pytest.fixture(scope="module")
def auth_app(service_env: dict[str, str]) -> FastAPI:
    return create_app(AuthSettings())  # type: ignore[call-arg]


@pytest.fixture(scope="module")
async def client(auth_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running(auth_app) as client:
        yield client


@pytest.fixture
async def engine(migrated_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(normalize_database_url(migrated_database))
    yield engine
    await engine.dispose()


@pytest.fixture
def email() -> str:
    return f"user-{secrets.token_hex(6)}@example.com"


async def register(
    client: httpx.AsyncClient, email: str, password: str = PASSWORD, **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        "/auth/register", json={"email": email, "password": password, **extra}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    response = await client.post("/auth/token", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def users_matching(engine: AsyncEngine, tenant_id: str, emails: list[str]) -> list[Any]:
    """The stored rows of a tenant's users and of the given emails, to prove nothing changed."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT id, email, password_hash, tenant_id, disabled FROM auth.users"
                " WHERE tenant_id = :tenant OR email = ANY(:emails) ORDER BY email"
            ),
            {"tenant": tenant_id, "emails": emails},
        )
        return [tuple(row) for row in result]
