"""The whole stack as real processes, started once for the end-to-end tests."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from cli.stack import start_stack, stop_stack
from shared.settings import SERVICE_PORTS
from tests.e2e.otlp_receiver import OtlpReceiver
from tests.infrastructure import database_beside, free_port, model_ports


def e2e_model_ports() -> dict[str, str]:
    """Where a stack's model servers listen: this test worker's ports, not 8100+."""
    ports = model_ports()[200:500]
    return {"NEXUS_MODEL_PORT_START": str(ports.start), "NEXUS_MODEL_PORT_END": str(ports[-1])}


# Module scope: the stack stops when the end-to-end module finishes, not at session end.
@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def stack(
    database_url: str,
    otlp: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("e2e-home")
    # Free ports, so the tests never collide with a stack a developer already runs.
    overrides = {f"NEXUS_{name.upper()}_PORT": str(free_port()) for name in SERVICE_PORTS}
    overrides |= {
        # A database and a NATS of the stack's own: the in-process services other test
        # modules start in this worker consume the same subjects and read every tenant's
        # rows (capacity, the outbox relay), and would act on this stack's workflows.
        "NEXUS_DATABASE_URL": database_beside(database_url, "e2e"),
        "NEXUS_NATS_URL": "",  # empty: the stack starts its own, in milliseconds
        "NEXUS_CONSUMER_PREFIX": f"e2e-{secrets.token_hex(4)}-",
        # Deployments left "running" in a shared test database by earlier runs are not
        # this run's to bring back.
        "NEXUS_RESTORE_ON_STARTUP": "false",
        **e2e_model_ports(),
        "NEXUS_OTLP_ENDPOINT": otlp.endpoint,
    }
    info = start_stack(home, overrides, timeout=180)
    try:
        yield info
    finally:
        stop_stack(home)


async def register_user(stack: Any) -> str:
    """A new account (so a new tenant) on the stack; its access token."""
    email = f"e2e-{secrets.token_hex(4)}@example.com"
    password = secrets.token_urlsafe(16)
    async with httpx.AsyncClient(base_url=stack.url("auth")) as auth:
        registered = await auth.post("/auth/register", json={"email": email, "password": password})
        registered.raise_for_status()
        token = await auth.post("/auth/token", data={"username": email, "password": password})
        token.raise_for_status()
        access: str = token.json()["access_token"]
        return access


@pytest.fixture(scope="module")
async def user_token(stack: Any) -> str:
    return await register_user(stack)


def service_client(stack: Any, token: str, service: str, timeout: float = 30) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.AsyncClient(base_url=stack.url(service), headers=headers, timeout=timeout)


@pytest.fixture
async def cluster_client(stack: Any, user_token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(stack, user_token, "cluster") as client:
        yield client
