"""Start a throwaway Postgres or NATS for the tests when none is configured."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def start_test_postgres(data_dir: Path) -> Iterator[str]:
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="asyncpg") as pg:
            yield pg.get_connection_url()
        return
    from cli.stack.embedded_postgres import EmbeddedPostgres

    server = EmbeddedPostgres(data_dir)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@contextlib.contextmanager
def start_test_nats(data_dir: Path) -> Iterator[str]:
    if docker_available():
        from testcontainers.nats import NatsContainer

        with NatsContainer("nats:2.11-alpine").with_command("-js") as nats:
            yield nats.nats_uri()
        return
    binary = shutil.which("nats-server") or str(Path(sys.executable).parent / "nats-server")
    port = free_port()
    process = subprocess.Popen(
        [binary, "-js", "-sd", str(data_dir), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port} after {timeout}s")
