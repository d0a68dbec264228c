"""Helpers for running a service app in-process in tests."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.context
from collections.abc import AsyncIterator
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from shared.security import internal_headers
from tests.infrastructure import free_port


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


@contextlib.asynccontextmanager
async def serving(app: Any, *, lifespan: str = "auto") -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on a free local port in this event loop (for code
    under test that calls another service over real HTTP, or a response streamed, which the
    in-process transport would buffer); yields its base URL. `lifespan="off"` for an app
    whose lifespan already runs (`running`)."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan=lifespan
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # it failed to start: raise its error here
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def memory_keys(
    memory_url: str,
    headers: dict[str, str],
    workflow_id: object,
    expected: set[str] | frozenset[str],
    timeout: float = 30.0,
) -> dict[str, Any]:
    """A workflow's `neural/*` keys once all of `expected` are stored: the memory service
    stores them from events, moments after the phase that wrote them committed."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=memory_url, headers=headers) as client:
        while True:
            listed = await client.get(f"/memory/{workflow_id}", params={"prefix": "neural/"})
            values = {entry["key"]: entry["value"] for entry in listed.json()["entries"]}
            if expected <= set(values) or asyncio.get_running_loop().time() > deadline:
                return values
            await asyncio.sleep(0.1)


def warm_processes() -> multiprocessing.context.ForkServerContext:
    """Where tests start the ranks of a job: processes forked from one server that imported
    torch and the training stack once (as the platform's own nodes are), not a new
    interpreter each, which takes seconds apiece."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "shared.ml.strategies", "services.trainer.node_task"])
    return context
