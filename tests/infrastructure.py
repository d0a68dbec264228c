"""Start a throwaway Postgres or NATS for the tests when none is configured: containers
when a Docker engine answers, otherwise the embedded servers the local stack uses.

The suite runs in several pytest-xdist workers at once. Each worker's services are a whole
Nexus of their own, so no two may share a database (capacity, restores and the outbox read
every tenant's rows) or a NATS stream (each would consume the other's phase events): the
first worker uses what is configured, every other one a database beside the configured one
and a NATS server of its own."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
from sqlalchemy.engine import make_url

from shared.processes import port_is_free

__all__ = [
    "free_port",
    "model_ports",
    "start_test_nats",
    "start_test_postgres",
    "database_beside",
    "worker_database",
    "worker_index",
]

# Each worker's servers get ports of their own, clear of 8100+ (a developer's stack) and of
# the kernel's ephemeral range (32768+). A port found free there could be taken before the
# server binds it by any client's outgoing connection, or by another worker's server: it
# happened, and a whole end-to-end stack failed to start.
_MODEL_PORTS_BASE = 20000
_MODEL_PORTS_PER_WORKER = 1000
_SERVER_PORTS_BASE = 24000
_SERVER_PORTS_PER_WORKER = 1000
_next_server_port = itertools.count()


def worker_index() -> int:
    """Which pytest-xdist worker this process is: 0 when the tests run in one process."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


def free_port(host: str = "127.0.0.1") -> int:
    """A free port on `host` for a server a test starts, from this worker's own block; each
    call hands out the next one, so two servers never get the same."""
    start = _SERVER_PORTS_BASE + worker_index() * _SERVER_PORTS_PER_WORKER
    for _ in range(_SERVER_PORTS_PER_WORKER):
        port = start + next(_next_server_port) % _SERVER_PORTS_PER_WORKER
        if port_is_free(port, host):
            return port
    raise RuntimeError(f"no free port from {start} to {start + _SERVER_PORTS_PER_WORKER - 1}")


def model_ports() -> range:
    """The ports this worker's model servers may listen on."""
    start = _MODEL_PORTS_BASE + worker_index() * _MODEL_PORTS_PER_WORKER
    return range(start, start + _MODEL_PORTS_PER_WORKER)


def worker_database(url: str) -> str:
    """The configured database for the first worker; for each other, a database of its own
    on the same server."""
    index = worker_index()
    return url if index == 0 else database_beside(url, f"worker{index}")


def database_beside(url: str, suffix: str) -> str:
    """The URL of database `<name>_<suffix>` on the server of `url`, created if it is not
    there (and kept for the next run, as the configured one is)."""
    configured = make_url(url)
    own = configured.set(database=f"{configured.database}_{suffix}")

    async def create() -> None:
        plain = configured.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(plain)
        try:
            await conn.execute(f'CREATE DATABASE "{own.database}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await conn.close()

    # In a thread of its own: this thread's event loop belongs to pytest-asyncio.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, create()).result()
    return own.render_as_string(hide_password=False)


def docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


def _embedded_home():  # type: ignore[no-untyped-def]
    from cli.stack.home import resolve_home

    # Not pytest's tmp_path: as root, each pytest run resets /tmp/pytest-of-root to 0700,
    # which locks out the system user the embedded Postgres runs as.
    return resolve_home(tempfile.mkdtemp(prefix="nexus-test-")).ensure()


@contextlib.contextmanager
def start_test_postgres() -> Iterator[str]:
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as pg:
            yield pg.get_connection_url()
        return
    from cli.stack import supervisor
    from cli.stack.embedded_postgres import start_postgres

    server = start_postgres(_embedded_home())
    try:
        yield server.url
    finally:
        supervisor.stop_all([server.record])


@contextlib.contextmanager
def start_test_nats() -> Iterator[str]:
    if docker_available():
        from testcontainers.nats import NatsContainer

        with NatsContainer("nats:2.11-alpine").with_command("-js") as nats:
            yield nats.nats_uri()
        return
    from cli.stack import supervisor
    from cli.stack.embedded_nats import start_nats

    record = start_nats(_embedded_home())
    try:
        yield str(record.url)
    finally:
        supervisor.stop_all([record])
