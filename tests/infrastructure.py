"""Start a throwaway Postgres or NATS for the tests when none is configured: containers
when a Docker engine answers, otherwise the embedded servers the local stack uses."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator

from shared.processes import free_port

__all__ = ["free_port", "start_test_nats", "start_test_postgres"]


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
