"""The service's end of the node fork server (services/cluster/node/forkserver.py): started
in the background when the service starts, so the first cluster's nodes are forked from an
interpreter that has torch imported already. While it is not ready, or if it died, nodes are
started the cold way (a new interpreter each), so a node start never waits on it."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

# How long a fork request may take to be answered before the cold start is used instead.
FORK_TIMEOUT_S = 10.0


class NodeLauncher:
    def __init__(self, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self._env, self._cwd, self._log_path = env, cwd, log_path
        self._lock = threading.Lock()  # one request on the pipe at a time
        self._process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        """Start the fork server and wait (in this thread) until it has imported torch."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                return
            self._ready.clear()
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._log_path, "ab") as log:
                self._process = subprocess.Popen(
                    [sys.executable, "-m", "services.cluster.node.forkserver"],
                    cwd=self._cwd,
                    env=self._env,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    start_new_session=True,
                )
            process = self._process
        answer = _read_line(process.stdout, timeout=120)
        if answer == {"ready": True}:
            self._ready.set()
            logger.info("node fork server ready (pid %d)", process.pid)
        else:
            logger.warning("node fork server did not start (%s); nodes start cold", answer)

    def start_in_background(self) -> None:
        threading.Thread(target=self.start, name="node-fork-server", daemon=True).start()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    @property
    def ready(self) -> bool:
        process = self._process
        return self._ready.is_set() and process is not None and process.poll() is None

    def fork(self, argv: list[str], env: dict[str, str], log_path: Path) -> int | None:
        """The pid of a node forked with `argv` and `env`, its output appended to `log_path`;
        None when the fork server cannot serve it now (the caller starts the node cold)."""
        if not self.ready:
            return None
        request = json.dumps({"argv": argv, "env": env, "log": str(log_path)}) + "\n"
        with self._lock:
            process = self._process
            if process is None or process.stdin is None:
                return None
            try:
                process.stdin.write(request)
                process.stdin.flush()
            except OSError:
                answer = None
            else:
                answer = _read_line(process.stdout, timeout=FORK_TIMEOUT_S)
        pid = answer.get("pid") if isinstance(answer, dict) else None
        if not isinstance(pid, int):
            logger.warning("node fork server failed (%s); restarting it", answer)
            self.stop()
            self.start_in_background()
            return None
        return pid

    def stop(self) -> None:
        """Close its stdin, which ends it; the nodes it forked go on."""
        with self._lock:
            process, self._process = self._process, None
            self._ready.clear()
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _read_line(stream: IO[str] | None, timeout: float) -> dict[str, object] | None:
    """One JSON line from `stream`, or None after `timeout` or at its end."""
    if stream is None:
        return None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not result or not result[0]:
        return None
    try:
        answer = json.loads(result[0])
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None
