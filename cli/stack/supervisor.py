"""Start detached processes and stop exactly those we started.

A pid alone is not an identity: the kernel reuses pids, so a stale state file could name a
stranger's process. Every record therefore carries the process create_time, and nothing is
signalled unless both match.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from shared.processes import logging_to, terminate

# create_time is derived from boot time + start ticks; the same process always yields the
# same float, so a small tolerance only absorbs rounding, never a different process.
CREATE_TIME_TOLERANCE_S = 0.01


@dataclass
class ProcessRecord:
    name: str
    pid: int
    create_time: float
    # Services start a new session, so their pid is also their process-group id.
    owns_group: bool = False
    # Postgres wants SIGINT ("fast shutdown"); SIGTERM would wait for every client to leave.
    stop_signal: int = int(signal.SIGTERM)
    url: str | None = None
    log: str | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> ProcessRecord:
        return cls(**data)


def record_for_pid(name: str, pid: int, **kwargs) -> ProcessRecord:
    """Pin a running pid to its identity now, while we know it is the process we mean."""
    create_time = psutil.Process(pid).create_time()
    return ProcessRecord(name=name, pid=pid, create_time=create_time, **kwargs)


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log_path: Path,
    cwd: Path | None = None,
    url: str | None = None,
    pass_fds: Sequence[int] = (),
) -> ProcessRecord:
    """Start `argv` detached (own session) with stdout+stderr appended to `log_path`;
    `pass_fds` are the only descriptors of ours it inherits."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            # A service rotates the file it logs to (shared.telemetry); NATS and Postgres
            # ignore the variable.
            env={**env, **logging_to(log_path)},
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # A new session: Ctrl-C in the terminal that ran `nexus up` must not reach it,
            # and `down` can signal it together with every child it spawns.
            start_new_session=True,
            close_fds=True,
            pass_fds=tuple(pass_fds),
        )
    return record_for_pid(name, proc.pid, owns_group=True, url=url, log=str(log_path))


def find_process(record: ProcessRecord) -> psutil.Process | None:
    """The live process the record names, or None if it is gone or the pid now means another."""
    try:
        proc = psutil.Process(record.pid)
        if abs(proc.create_time() - record.create_time) > CREATE_TIME_TOLERANCE_S:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return proc


def is_alive(record: ProcessRecord) -> bool:
    return find_process(record) is not None


def _group_members(record: ProcessRecord) -> list[psutil.Process]:
    """Processes still in the record's process group that started after its leader did.

    Linux does not hand out a pid while it is in use as a process-group id, so members of
    group `pid` are ours even after the leader exited; the create_time check guards the
    case where the whole group vanished and the number was reused.
    """
    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == record.pid and proc.create_time() >= record.create_time:
                members.append(proc)
        except (psutil.NoSuchProcess, ProcessLookupError, PermissionError):
            continue
    return members


def _targets(record: ProcessRecord, leader: psutil.Process | None) -> list[psutil.Process]:
    targets: dict[int, psutil.Process] = {}
    if leader is not None:
        targets[leader.pid] = leader
        try:
            # Children that moved to their own session (a model server started with
            # start_new_session) escape the group but are still our descendants.
            for child in leader.children(recursive=True):
                targets[child.pid] = child
        except psutil.NoSuchProcess:
            pass
    if record.owns_group:
        for member in _group_members(record):
            targets.setdefault(member.pid, member)
    return list(targets.values())


def started_for(home: Path, since: float) -> list[psutil.Process]:
    """The processes still running that were started for the stack at `home` since `since`.

    Whatever a service starts (nodes, model servers, their fork servers) inherits the
    stack's NEXUS_HOME, wherever it ends up in the process tree: a node or model server
    outlives a service killed and started again, and the new one adopts it without being
    its parent, so only this finds it. This process (the CLI) is never one of them."""
    wanted = str(home)
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.create_time() < since:
                continue
            if proc.environ().get("NEXUS_HOME") == wanted:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_all(records: Sequence[ProcessRecord], timeout: float = 10.0) -> list[str]:
    """Stop the recorded processes, their groups and descendants; return the names stopped.

    Leaders get their own stop signal first, all at once, so each server shuts down in
    order and in parallel; what remains of their groups is then terminated, and whatever
    outlives `timeout` is killed.
    """
    leaders: list[tuple[ProcessRecord, psutil.Process]] = []
    followers: dict[int, psutil.Process] = {}
    stopped = []
    for record in records:
        leader = find_process(record)
        targets = _targets(record, leader)
        if targets:
            stopped.append(record.name)
        if leader is not None:
            leaders.append((record, leader))
        for proc in targets:
            if leader is None or proc.pid != leader.pid:
                followers.setdefault(proc.pid, proc)
    terminate([proc for _, proc in leaders], timeout, [rec.stop_signal for rec, _ in leaders])
    rest = list(followers.values())
    terminate(rest, timeout)
    return stopped


def stop(record: ProcessRecord, timeout: float = 10.0) -> bool:
    """Stop one recorded process; False when nothing of ours was running under that pid."""
    return bool(stop_all([record], timeout))
