"""The service's end of a fork server (shared/fork_server.py): started in the background when
the service starts, so the first processes it needs are forked from an interpreter that has
torch imported already. A start asked for while the server is still importing waits for it
(at most `STARTING_WAIT_S`): a new interpreter would import torch too, slower, competing with
it for the same cores. If the server died or never gets ready, `fork` answers None and the
caller starts the process the cold way (a new interpreter)."""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from pathlib import Path

logger = logging.getLogger(__name__)

SERVER_MODULE = "shared.fork_server"
# How long a fork request may take to be answered before the cold start is used instead.
FORK_TIMEOUT_S = 10.0
# The fork server imports torch first; past this, processes keep starting cold.
READY_TIMEOUT_S = 120.0
# How long a start waits for a fork server that is still importing; about what a cold start
# takes on a loaded host, so waiting is never much slower than not.
STARTING_WAIT_S = 20.0
_STARTING_POLL_S = 0.05
# Exit codes kept until the caller reads them; a bound, should it never.
_MAX_EXITS = 10_000


class ForkLauncher:
    def __init__(
        self, server_args: list[str], env: dict[str, str], cwd: Path, log_path: Path
    ) -> None:
        """`server_args`: the fork server's `--warm ... --main ...`."""
        self._server_args = server_args
        self._env, self._cwd, self._log_path = env, cwd, log_path
        self.name = log_path.stem
        self._lock = threading.Lock()  # one request on the pipe at a time
        self._process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._answers: queue.Queue[dict[str, object]] = queue.Queue()
        self._exits: OrderedDict[int, int] = OrderedDict()
        # Its own lock: the reader records exits while a fork request holds `_lock` waiting
        # for an answer that only the reader can deliver (one lock stalled both for the
        # whole fork timeout whenever a child exited during a fork).
        self._exits_lock = threading.Lock()

    def start(self) -> None:
        """Start the fork server and wait (in this thread) until it has imported torch."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return
            self._ready.clear()
            self._answers = queue.Queue()
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._log_path, "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", SERVER_MODULE, *self._server_args],
                    cwd=self._cwd,
                    env=self._env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    start_new_session=True,
                )
            self._process = process
            answers = self._answers
        threading.Thread(
            target=self._read, args=(process, answers), name=self.name, daemon=True
        ).start()
        if self._ready.wait(READY_TIMEOUT_S) and process.poll() is None:
            logger.info("%s ready (pid %d)", self.name, process.pid)
        else:
            logger.warning("%s did not start; processes start cold", self.name)

    def start_in_background(self) -> None:
        threading.Thread(target=self.start, name=f"{self.name}-start", daemon=True).start()

    def _read(
        self, process: subprocess.Popen[str], answers: queue.Queue[dict[str, object]]
    ) -> None:
        """Every line the server writes: readiness, fork answers, and its children's exits."""
        assert process.stdout is not None
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("ready"):
                self._ready.set()
            elif "exited" in message:
                with self._exits_lock:
                    self._exits[int(message["exited"])] = int(message["code"])
                    while len(self._exits) > _MAX_EXITS:
                        self._exits.popitem(last=False)
            else:
                answers.put(message)
        answers.put({"error": "the fork server ended"})

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    @property
    def ready(self) -> bool:
        process = self._process
        return self._ready.is_set() and process is not None and process.poll() is None

    @property
    def starting(self) -> bool:
        """Running, still importing what its children need."""
        process = self._process
        return not self._ready.is_set() and process is not None and process.poll() is None

    def exit_code(self, pid: int) -> int | None:
        """How a forked process ended (a negative code: killed by that signal), once it has."""
        with self._exits_lock:
            return self._exits.pop(pid, None)

    def fork(self, argv: list[str], env: dict[str, str], log_path: Path) -> int | None:
        """The pid of a process forked with `argv` and `env`, its output appended to
        `log_path`; None when the fork server cannot serve it now (the caller starts it cold)."""
        deadline = time.monotonic() + STARTING_WAIT_S
        while self.starting and time.monotonic() < deadline:
            # Polled, not one long wait: a server stopped meanwhile ends the wait at once.
            self._ready.wait(_STARTING_POLL_S)
        if not self.ready:
            return None
        request = json.dumps({"argv": argv, "env": env, "log": str(log_path)}) + "\n"
        with self._lock:
            process, answers = self._process, self._answers
            answer: dict[str, object] | None = None
            if process is not None and process.stdin is not None:
                try:
                    process.stdin.write(request)
                    process.stdin.flush()
                    answer = answers.get(timeout=FORK_TIMEOUT_S)
                except (OSError, queue.Empty):
                    answer = None
        pid = answer.get("pid") if answer is not None else None
        if not isinstance(pid, int):
            logger.warning("%s failed (%s); restarting it", self.name, answer)
            self.stop()
            self.start_in_background()
            return None
        return pid

    def stop(self) -> None:
        """Close its stdin, which ends it; the processes it forked go on."""
        with self._lock:
            process, self._process = self._process, None
            importing = not self._ready.is_set()
            self._ready.clear()
        if process is None:
            return
        if importing:
            process.kill()  # it reads its stdin only once it has imported: seconds from now
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
