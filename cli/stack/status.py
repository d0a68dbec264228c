"""What `nexus status` shows: each component, whether it is alive, and whether it is ready."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from cli.stack import supervisor
from cli.stack.home import NexusHome, resolve_home
from cli.stack.ports import listens_on
from cli.stack.readiness import probe
from cli.stack.state import StackInfo, load_state


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    pid: int | None  # None for an external NATS/Postgres the stack did not start
    alive: bool
    url: str
    ready: str  # "200"/"503"/error name for services, a word for the infrastructure


def redact(url: str) -> str:
    """Hide a password in a URL before it is printed."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def _infra_status(info: StackInfo, name: str, url: str) -> ComponentStatus:
    record = info.process(name)
    if record is None:
        return ComponentStatus(name, None, True, redact(url), "external")
    alive = supervisor.is_alive(record)
    if name == "nats" and alive:
        port = urlsplit(url).port or 4222
        ready = "listening" if listens_on(record.pid, port) else "not listening"
    else:
        ready = "running" if alive else "stopped"
    return ComponentStatus(name, record.pid, alive, redact(url), ready)


def stack_status(home: str | os.PathLike[str] | NexusHome | None = None) -> list[ComponentStatus]:
    """Every component of the recorded stack; empty when no stack was started here."""
    nexus_home = home if isinstance(home, NexusHome) else resolve_home(home)
    info = load_state(nexus_home)
    if info is None:
        return []
    rows = [
        _infra_status(info, "nats", info.nats_url),
        _infra_status(info, "postgres", info.database_url),
    ]
    with httpx.Client(timeout=2.0) as client:
        for name, url in info.services.items():
            record = info.process(name)
            alive = record is not None and supervisor.is_alive(record)
            ready = probe(client, url) if alive else "-"
            rows.append(ComponentStatus(name, record.pid if record else None, alive, url, ready))
    return rows
