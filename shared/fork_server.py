"""`python -m shared.fork_server --warm MODULE[:FUNCTION]... --main MODULE:FUNCTION`: the warm
start of the processes the platform runs many of — cluster nodes and model servers — and of
the local stack's six services.

A fresh interpreter spends seconds importing torch before it can do anything. This process
imports what its children need once (each `--warm` module, calling FUNCTION when given), then
forks every child the service asks for from itself: a child is up in milliseconds, and the
pages of torch it never writes stay shared between all of them (copy-on-write), so ten
processes cost far less memory than ten imports. A child runs `--main`'s function with its
arguments, as `python -m` of that module would.

Protocol, one JSON object per line: the service writes `{"argv": [...], "env": {...},
"log": path}` on stdin (the child's arguments, its whole environment, the file its output
goes to); this process forks and answers `{"pid": n}` on stdout. When a child ends, this
process (its parent) reaps it and reports `{"exited": pid, "code": c}` (c < 0: killed by
signal -c), so the service still learns how it ended. It exits when stdin closes — the
service is gone — and its children go on, each in its own session.

Single-threaded on purpose: forking a process whose other threads may hold a lock leaves
that lock held forever in the child.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import runpy
import select
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

READY = {"ready": True}
ChildMain = Callable[[list[str]], int | None]


def _resolve(target: str) -> Any:
    """`module` (imported) or `module:function` (imported, the function returned)."""
    module_name, _, function = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, function) if function else module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.fork_server")
    parser.add_argument("--warm", action="append", default=[], help="module[:function]")
    parser.add_argument("--main", required=True, help="module:function each child runs")
    args = parser.parse_args(argv)
    # What every child needs, imported (and warmed) before the first fork, not after each.
    for target in args.warm:
        warmed = _resolve(target)
        if callable(warmed):
            warmed()
    child_main: ChildMain = _resolve(args.main)

    requests_fd, answers_fd = sys.stdin.fileno(), sys.stdout.fileno()
    # A node's exit wakes the loop through this pipe (signal.set_wakeup_fd).
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _answer(answers_fd, READY)
    pending = b""
    while True:
        readable, _, _ = select.select([requests_fd, wake_read], [], [])
        if wake_read in readable:
            while _drained(wake_read):
                pass
            _reap(answers_fd)
        if requests_fd in readable:
            chunk = os.read(requests_fd, 1 << 16)
            if not chunk:
                return 0  # the service closed our stdin: it is gone
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                _serve(line, answers_fd, (wake_read, wake_write), child_main)


def _serve(line: bytes, answers_fd: int, wake: tuple[int, int], child_main: ChildMain) -> None:
    try:
        request = json.loads(line)
        argv, env, log = list(request["argv"]), dict(request["env"]), str(request["log"])
    except (ValueError, KeyError, TypeError) as exc:
        _answer(answers_fd, {"error": f"bad request: {exc!r}"})
        return
    pid = os.fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)
        for fd in (*wake, answers_fd):
            os.close(fd)
        _run_child(child_main, argv, env, log)  # never returns
    _answer(answers_fd, {"pid": pid})


def _reap(answers_fd: int) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _answer(answers_fd, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})


def _drained(fd: int) -> bool:
    try:
        return bool(os.read(fd, 4096))
    except BlockingIOError:
        return False


def _answer(fd: int, message: dict[str, Any]) -> None:
    # os.write, not sys.stdout: no Python-level lock is ever held when this process forks.
    os.write(fd, (json.dumps(message) + "\n").encode())


def run_module(argv: list[str]) -> None:
    """A child main for `--main shared.fork_server:run_module`: run `argv[0]` as
    `python -m argv[0] argv[1:]...` would (the local stack's services are forked this way)."""
    module, *arguments = argv
    sys.argv = [module, *arguments]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def _run_child(child_main: ChildMain, argv: list[str], env: dict[str, str], log: str) -> None:
    """In the forked child: run as `python -m` of the main module would, then leave."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the child waits on its own children
        os.setsid()  # a Ctrl-C meant for the service does not reach the child
        output = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        nothing = os.open(os.devnull, os.O_RDONLY)
        os.dup2(nothing, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        # With this process's stdout (the answers) closed above, either may have been
        # given fd 1 or 2, which must stay open.
        for fd in {output, nothing} - {0, 1, 2}:
            os.close(fd)
        os.environ.clear()
        os.environ.update(env)
        code = child_main(argv) or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
