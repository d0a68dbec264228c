"""The supervisor signals a process only when pid *and* create_time match its record."""

from __future__ import annotations

import json
import sys
import time

import psutil

from cli.stack import supervisor
from cli.stack.supervisor import ProcessRecord


def test_refuses_a_pid_whose_create_time_differs(sleeper):
    stranger = sleeper()
    real = psutil.Process(stranger.pid).create_time()
    # What a stale state file looks like after the kernel reused the pid.
    stale = ProcessRecord("auth", stranger.pid, create_time=real - 5.0, owns_group=True)

    assert not supervisor.is_alive(stale)
    assert supervisor.stop(stale, timeout=1) is False
    assert stranger.poll() is None, "a process we did not start was killed"


def test_stops_the_process_it_recorded(sleeper):
    proc = sleeper()
    record = supervisor.record_for_pid("sleeper", proc.pid)

    assert supervisor.is_alive(record)
    assert supervisor.stop(record, timeout=5) is True
    assert proc.wait(timeout=5) is not None
    assert not supervisor.is_alive(record)


# Spawns one child in its own process group (like uvicorn workers or node processes) and
# one in a new session (like a model server), then writes both pids and waits.
PARENT = """
import json, subprocess, sys, time
sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
same_group = subprocess.Popen(sleep)
own_session = subprocess.Popen(sleep, start_new_session=True)
open(sys.argv[1], "w").write(json.dumps([same_group.pid, own_session.pid]))
time.sleep(60)
"""


def wait_for_file(path, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} was never written")


def is_gone(proc: psutil.Process) -> bool:
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_stop_takes_the_whole_family_down(tmp_path):
    pids_file = tmp_path / "children.json"
    record = supervisor.spawn(
        "family",
        [sys.executable, "-c", PARENT, str(pids_file)],
        env={},
        log_path=tmp_path / "family.log",
    )
    family = [psutil.Process(record.pid)]
    family += [psutil.Process(pid) for pid in json.loads(wait_for_file(pids_file))]

    assert supervisor.stop(record, timeout=5) is True

    assert all(is_gone(proc) for proc in family)
