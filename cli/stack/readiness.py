"""Wait for services to answer GET /readyz with 200, and report the ones that never did."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import psutil

from cli.stack import supervisor
from cli.stack.ports import listens_on
from cli.stack.supervisor import ProcessRecord

POLL_INTERVAL_S = 0.05


@dataclass(frozen=True)
class NotReady:
    name: str
    reason: str
    log: str | None


def probe(client: httpx.Client, url: str) -> str:
    """One /readyz result in words: "200", "503", or the connection error."""
    try:
        return str(client.get(f"{url}/readyz").status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


def serves_port(record: ProcessRecord, url: str) -> bool:
    """True when our process (or one of its children) holds the URL's listening socket.

    A 200 from a port some other program holds (another stack, a stray server) must not
    count as our service being ready.
    """
    proc = supervisor.find_process(record)
    port = httpx.URL(url).port
    if proc is None or port is None:
        return False
    try:
        family = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    return any(listens_on(member.pid, port) for member in family)


def wait_ready(
    records: Mapping[str, ProcessRecord], urls: Mapping[str, str], deadline: float
) -> list[NotReady]:
    """Poll every service until all are ready; stop early if one of them exits.

    Returns the services that failed (empty when all are ready). A service that died is
    reported at once rather than after the full timeout: its log already says why.
    """
    pending = dict(urls)
    last: dict[str, str] = {}
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for name, url in list(pending.items()):
                if not supervisor.is_alive(records[name]):
                    return [NotReady(name, "exited before it was ready", records[name].log)]
                last[name] = probe(client, url)
                if last[name] == "200":
                    if not serves_port(records[name], url):
                        last[name] = "200 from a process that is not ours"
                        continue
                    del pending[name]
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL_S)
    return [
        NotReady(name, f"/readyz answered {last.get(name, 'nothing')}", records[name].log)
        for name in pending
    ]
