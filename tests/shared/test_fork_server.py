"""The fork server (shared/fork_server.py) as `--main shared.fork_server:run_module` uses it,
the way the local stack starts its services: a child runs a module as `python -m` would,
with its arguments, environment and output file, and its exit code comes back."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from shared.fork_launcher import ForkLauncher

ROOT = Path(__file__).resolve().parents[2]
CHILD = "tests.shared.fork_child"


def _launcher(tmp_path: Path, *warm: str) -> ForkLauncher:
    args = [arg for module in warm for arg in ("--warm", module)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return ForkLauncher(
        [*args, "--main", "shared.fork_server:run_module"], env, ROOT, tmp_path / "server.log"
    )


def _exit_code(launcher: ForkLauncher, pid: int) -> int | None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        code = launcher.exit_code(pid)
        if code is not None:
            return code
        time.sleep(0.02)
    return None


def test_a_module_runs_with_its_arguments_environment_and_output_file(tmp_path: Path) -> None:
    launcher = _launcher(tmp_path)
    launcher.start()
    try:
        log = tmp_path / "child.log"
        env = {"GREETING": "hello", "PATH": os.environ["PATH"]}
        pid = launcher.fork([CHILD, "7"], env, log)
        assert pid is not None
        assert _exit_code(launcher, pid) == 7
        # Both streams reach the file, whatever descriptors the fork server held.
        assert log.read_text().splitlines() == [
            "stdout: argv=['7'] greeting=hello",
            "stderr: still open",
        ]
    finally:
        launcher.stop()


def test_children_exiting_while_others_are_forked_never_stall_a_fork(tmp_path: Path) -> None:
    """The server reports each child's exit on the pipe its fork answers come back on; a
    report read while a fork waits for its answer must not hold that answer up."""
    launcher = _launcher(tmp_path)
    launcher.start()
    try:
        env = {"PATH": os.environ["PATH"]}
        started = time.monotonic()
        pids = [launcher.fork([CHILD, "0"], env, tmp_path / f"{i}.log") for i in range(20)]
        assert None not in pids
        assert all(_exit_code(launcher, pid) == 0 for pid in pids if pid is not None)
        # A stalled fork waits out its 10 s timeout; twenty quick ones take well under it.
        assert time.monotonic() - started < 8
    finally:
        launcher.stop()


def _importing(tmp_path: Path) -> ForkLauncher:
    """A launcher whose server has started and is still importing (for seconds)."""
    launcher = _launcher(tmp_path, f"{CHILD}:slow_warm_up")
    launcher.start_in_background()
    deadline = time.monotonic() + 10
    while not launcher.starting and time.monotonic() < deadline:
        time.sleep(0.01)
    return launcher


def test_stopping_a_server_that_is_still_importing_ends_it_at_once(tmp_path: Path) -> None:
    launcher = _importing(tmp_path)
    server = launcher.pid
    assert launcher.starting and server is not None

    started = time.monotonic()
    launcher.stop()

    assert time.monotonic() - started < 2, "stop waited for the warm-up"
    assert not _alive(server)


def test_a_fork_waiting_for_a_server_that_is_stopped_gives_up_at_once(tmp_path: Path) -> None:
    launcher = _importing(tmp_path)
    answers: list[int | None] = []
    waiting = threading.Thread(
        target=lambda: answers.append(launcher.fork(["x"], {}, tmp_path / "child.log"))
    )
    waiting.start()
    time.sleep(0.2)  # the fork waits for the warm-up

    started = time.monotonic()
    launcher.stop()
    waiting.join(timeout=10)

    assert answers == [None]  # not forked: the caller decides what to do instead
    assert time.monotonic() - started < 2, "the fork waited for a server that was stopped"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
