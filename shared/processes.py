"""Helpers for the local processes Nexus starts (services, nodes, model servers): ports to
give them and the end of their logs when they fail."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

# The file a started process logs to and rotates (shared.telemetry.configure_logging).
LOG_FILE_VARIABLE = "NEXUS_LOG_FILE"


def logging_to(path: Path) -> dict[str, str]:
    """The environment that has a started process log to (and rotate) `path`, the file its
    stdout and stderr are appended to."""
    return {LOG_FILE_VARIABLE: str(path)}


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers (uvicorn, nats-server) bind with SO_REUSEADDR, so a port whose old
        # connections linger in TIME_WAIT is free to them; only a live listener blocks.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel has just found free on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: str | Path | None, lines: int = 40) -> str:
    if not path or not Path(path).exists():
        return "(no log)"
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def _signal_quietly(procs: Sequence[psutil.Process], sig: int) -> None:
    for proc in procs:
        try:
            proc.send_signal(sig)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def has_exited(proc: psutil.Process) -> bool:
    """Gone, or a zombie: psutil's wait() never sees a zombie that is not our child vanish."""
    try:
        # Reap it if it is our own child, else a zombie lingers.
        os.waitpid(proc.pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process exited (a zombie counts as exited); return the survivors."""
    deadline = time.monotonic() + timeout
    alive = list(procs)
    while alive:
        alive = [proc for proc in alive if not has_exited(proc)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def terminate(
    procs: Sequence[psutil.Process], timeout: float, sigs: Sequence[int] | None = None
) -> None:
    """Send each process its stop signal (SIGTERM unless given), wait up to `timeout`, then
    SIGKILL what is left."""
    for proc, sig in zip(procs, sigs or [signal.SIGTERM] * len(procs), strict=True):
        _signal_quietly([proc], sig)
    survivors = wait_gone(procs, timeout)
    _signal_quietly(survivors, signal.SIGKILL)
    wait_gone(survivors, 2.0)
