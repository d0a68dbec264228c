"""Helpers for running a service app in-process in tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI

from shared.security import internal_headers


@contextlib.asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (engine, broker, ...) and give an in-process HTTP client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def as_service(internal_token: str, tenant_id: str) -> dict[str, str]:
    """Headers of a service-to-service call acting for `tenant_id`."""
    return internal_headers(internal_token, tenant_id)
