"""Fixtures for the CLI tests: a private NEXUS_HOME, throwaway processes, free ports."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from cli.stack.home import NexusHome, resolve_home
from cli.stack.ports import pick_free_port


@pytest.fixture
def home(tmp_path, monkeypatch) -> NexusHome:
    """A fresh NEXUS_HOME per test, also exported so CLI commands resolve it."""
    monkeypatch.setenv("NEXUS_HOME", str(tmp_path / "nexus"))
    return resolve_home(tmp_path / "nexus").ensure()


@pytest.fixture
def sleeper() -> Iterator[Callable[[], subprocess.Popen]]:
    """Start `python -c 'sleep'` processes that are killed when the test ends."""
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def free_ports() -> Callable[[int], list[int]]:
    """`n` distinct free ports away from the services' defaults (8001-8006)."""

    def pick(count: int) -> list[int]:
        ports: list[int] = []
        candidate = 18000
        while len(ports) < count:
            port = pick_free_port(candidate)
            ports.append(port)
            candidate = port + 1
        return ports

    return pick
