"""The error envelope: every error is `{"error", "detail"}` with the right status."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field

from shared.errors import Conflict, NotFound, install_error_handlers


class Body(BaseModel):
    name: str = Field(min_length=1)
    size: int = Field(ge=1)


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/things")
    async def create(body: Body) -> dict[str, str]:
        if body.name == "taken":
            raise Conflict("a thing named 'taken' exists")
        return {"name": body.name}

    @app.get("/things/{name}")
    async def read(name: str) -> dict[str, str]:
        raise NotFound(f"no thing {name!r}")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("internal detail that must not leak")

    return app


@pytest.fixture
async def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def test_validation_error_names_each_field(client: httpx.AsyncClient) -> None:
    response = await client.post("/things", json={"name": "", "size": 0})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert {d["field"] for d in body["detail"]} == {"name", "size"}


async def test_domain_errors_keep_their_status(client: httpx.AsyncClient) -> None:
    conflict = await client.post("/things", json={"name": "taken", "size": 1})
    assert conflict.status_code == 409
    assert conflict.json() == {"error": "conflict", "detail": "a thing named 'taken' exists"}
    missing = await client.get("/things/x")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


async def test_unknown_route_and_method_use_the_envelope(client: httpx.AsyncClient) -> None:
    assert set((await client.get("/nowhere")).json()) == {"error", "detail"}
    wrong_method = await client.delete("/things")
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"


async def test_unexpected_errors_are_500_without_internals(client: httpx.AsyncClient) -> None:
    response = await client.get("/boom")
    assert response.status_code == 500
    assert "internal detail" not in response.text
    assert response.json()["error"] == "internal_error"
