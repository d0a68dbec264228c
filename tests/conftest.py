"""Where the tests' Postgres and NATS come from, and helpers to run a service in-process.

Order: NEXUS_DATABASE_URL / NEXUS_NATS_URL when set; otherwise testcontainers when a Docker
engine answers; otherwise the embedded servers the local stack uses. Never a silent skip.
With several pytest-xdist workers, each has its own (tests/infrastructure.py).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.infrastructure import (
    start_test_nats,
    start_test_postgres,
    worker_database,
    worker_index,
)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("NEXUS_DATABASE_URL")
    if url:
        yield worker_database(url)
        return
    with start_test_postgres() as started:
        yield started


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    url = os.environ.get("NEXUS_NATS_URL")
    if url and worker_index() == 0:
        yield url
        return
    with start_test_nats() as started:
        yield started


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> str:
    from shared.migrate import upgrade

    upgrade(database_url)
    return database_url


@pytest.fixture(scope="session")
def internal_token() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def tenant_id() -> str:
    """A fresh tenant per test keeps tests independent without truncating tables."""
    return f"t-{secrets.token_hex(6)}"


@pytest.fixture(scope="session")
def service_env(
    migrated_database: str,
    nats_url: str,
    internal_token: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    """Environment for a service under test (also exported, since settings read the env)."""
    home = tmp_path_factory.mktemp("nexus-home")
    env = {
        "NEXUS_DATABASE_URL": migrated_database,
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_INTERNAL_TOKEN": internal_token,
        "NEXUS_HOME": str(home),
        "NEXUS_ENV": "test",
        # This run's own durable consumers: no backlog from earlier runs on a shared NATS.
        "NEXUS_CONSUMER_PREFIX": f"test-{secrets.token_hex(4)}-",
    }
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
async def memory_url(service_env: dict[str, str]) -> AsyncIterator[str]:
    """The memory service over real HTTP, for services under test that write their keys."""
    from services.memory.app import create_app
    from services.memory.settings import MemorySettings
    from tests.support import serving

    async with serving(create_app(MemorySettings())) as url:  # type: ignore[call-arg]
        yield url
