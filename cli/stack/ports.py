"""Small TCP helpers: find a free port, wait until a given process listens on one."""

from __future__ import annotations

import time

import psutil

from shared.processes import port_is_free

__all__ = ["pick_free_port", "port_is_free", "wait_for_listen", "listens_on"]


def pick_free_port(preferred: int, host: str = "127.0.0.1", attempts: int = 100) -> int:
    """The first free port from `preferred` upwards; stable numbers are easier to debug."""
    for port in range(preferred, preferred + attempts):
        if port_is_free(port, host):
            return port
    raise RuntimeError(f"no free port in {preferred}..{preferred + attempts - 1} on {host}")


def listens_on(pid: int, port: int) -> bool:
    """True when process `pid` itself holds a listening socket on `port`.

    Asking the process rather than connecting to the port means a stranger that grabbed
    the port between our pick and the server's bind is never mistaken for our server.
    """
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


def wait_for_listen(pid: int, port: int, timeout: float) -> bool:
    """Poll until `pid` listens on `port`; give up early once the process is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listens_on(pid, port):
            return True
        if not psutil.pid_exists(pid):
            return False
        time.sleep(0.01)
    return False
