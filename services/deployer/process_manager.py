"""Model server processes the deployer starts, watches and stops, and the ports they hold."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from shared.artifacts import local_path
from shared.fork_launcher import ForkLauncher
from shared.processes import log_tail, logging_to, port_is_free, terminate
from shared.spec import BatchingSpec

logger = logging.getLogger(__name__)

SERVER_MODULE = "services.deployer.model_server"
# What a forked model server runs, and what the fork server imports for it beforehand.
SERVER_MAIN = "services.deployer.model_server.server:main"
SERVER_WARM_UP = (
    "torch",
    "uvicorn",
    "services.deployer.model_server.app",
    "shared.ml.runtimes:prewarm_exports",
)
# The folder that holds `services/` and `shared/`: the child imports the same code.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
_LOG_TAIL_LINES = 20


class ModelServerFailed(Exception):
    """The server exited, or did not become ready in time; the message carries its log tail."""


# How long a forked server's pid may be gone before its code is given up on.
EXIT_REPORT_GRACE_S = 2.0


class PortUnavailable(Exception):
    pass


@dataclass
class ModelProcess:
    deployment_id: uuid.UUID
    port: int
    pid: int
    log_path: Path | None
    popen: subprocess.Popen[bytes] | None  # None: forked, or adopted from an earlier deployer
    launcher: ForkLauncher | None = None  # the fork server that forked it, which reaps it
    exited_with: int | None = None  # a forked server's code, once its fork server reported it
    gone_since: float | None = None  # when its pid was first seen gone, with no code yet

    def exit_code(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        if self.exited_with is None and self.launcher is not None:
            self.exited_with = self.launcher.exit_code(self.pid)
        if self.exited_with is not None:
            return self.exited_with
        if psutil.pid_exists(self.pid):
            return None
        if self.launcher is not None:
            # The fork server reaps a child a moment before its reader tells us the code.
            self.gone_since = self.gone_since or time.monotonic()
            if time.monotonic() - self.gone_since < EXIT_REPORT_GRACE_S:
                return None
        return -1  # gone, how is unknown (adopted, or its fork server is gone too)


def model_server_environment() -> dict[str, str]:
    """A model server's environment: the deployer's, with this checkout importable and one
    OpenMP thread (several servers share few cores)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["OMP_NUM_THREADS"] = "1"
    return env


def model_fork_launcher(env: dict[str, str], logs_dir: Path) -> ForkLauncher:
    """The fork server of a host's model servers (shared/fork_server.py)."""
    server_args = [arg for module in SERVER_WARM_UP for arg in ("--warm", module)]
    server_args += ["--main", SERVER_MAIN]
    return ForkLauncher(server_args, env, SOURCE_ROOT, logs_dir / "model-fork-server.log")


def is_model_server(pid: int, port: int) -> bool:
    """Whether `pid` is a live model server on `port` (a pid may have been reused since)."""
    try:
        process = psutil.Process(pid)
        cmdline = process.cmdline()
        alive = process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
    if not alive:
        return False
    if SERVER_MODULE in cmdline:
        return str(port) in cmdline
    # Forked: the fork server's command line; the port it listens on names it.
    if SERVER_MAIN in cmdline:
        listening = process.net_connections(kind="tcp")
        return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in listening)
    return False


class ModelProcessManager:
    def __init__(
        self,
        host: str,
        port_range: range,
        logs_dir: Path,
        launcher: ForkLauncher | None = None,
        bind_host: str | None = None,
        verifying_env: dict[str, str] | None = None,
    ) -> None:
        """`host`: where the deployer and clients reach a server; `bind_host` (default
        `host`): the address it listens on (0.0.0.0 in a container, so its published
        port answers); `verifying_env`: what a server needs to check credentials (the auth
        service's URL, the internal token)."""
        self.launcher = launcher
        self.verifying_env = verifying_env or {}
        self.host = host
        self.bind_host = bind_host or host
        self.port_range = port_range
        self.logs_dir = logs_dir
        self._processes: dict[uuid.UUID, ModelProcess] = {}
        self._reserved: set[int] = set()

    def url(self, port: int) -> str:
        return f"http://{self.host}:{port}"

    def reserve_port(self, requested: int | None) -> int:
        """Hold `requested`, or the first free port of the range, for a server about to start."""
        if requested is not None:
            if requested in self._reserved or not port_is_free(requested, self.bind_host):
                raise PortUnavailable(f"port {requested} is already in use")
            self._reserved.add(requested)
            return requested
        for port in self.port_range:
            if port not in self._reserved and port_is_free(port, self.bind_host):
                self._reserved.add(port)
                return port
        raise PortUnavailable(
            f"no free port between {self.port_range.start} and {self.port_range.stop - 1}"
        )

    def release_port(self, port: int | None) -> None:
        if port is not None and not any(p.port == port for p in self._processes.values()):
            self._reserved.discard(port)

    def start(
        self,
        deployment_id: uuid.UUID,
        model_uri: str,
        port: int,
        *,
        model_id: uuid.UUID,
        name: str,
        version: int,
        tenant_id: str | None,
        batching: BatchingSpec | None = None,
        precision: str = "float32",
    ) -> ModelProcess:
        """Start a server for the model at `model_uri`: for callers of `tenant_id`, or for
        anyone when it is None (a public deployment)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.logs_dir / f"{deployment_id}.log"
        model_dir = local_path(model_uri) if model_uri.startswith("file://") else model_uri
        command = [
            sys.executable,
            "-m",
            SERVER_MODULE,
            "--model-dir",
            model_dir,
            "--host",
            self.bind_host,
            "--port",
            str(port),
            "--model-id",
            str(model_id),
            "--model-name",
            name,
            "--model-version",
            str(version),
        ]
        command += ["--public"] if tenant_id is None else ["--tenant", tenant_id]
        if precision != "float32":
            command += ["--precision", precision]
        if batching is not None and batching.max_batch_size > 1:
            command += ["--max-batch-size", str(batching.max_batch_size)]
            command += ["--max-batch-wait-us", str(batching.max_wait_us)]
        # The server rotates its log (shared.telemetry).
        env = {**model_server_environment(), **self.verifying_env, **logging_to(log_path)}
        with log_path.open("ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(command)}\n".encode())
        pid = self.launcher.fork(command[3:], env, log_path) if self.launcher else None
        if pid is not None:
            process = ModelProcess(deployment_id, port, pid, log_path, None, self.launcher)
        else:
            process = self._start_cold(deployment_id, port, command, env, log_path)
        self._processes[deployment_id] = process
        self._reserved.add(port)
        logger.info(
            "started model server %s (pid %d, %s) on port %d",
            deployment_id,
            process.pid,
            "forked" if pid is not None else "cold",
            port,
        )
        return process

    def _start_cold(
        self,
        deployment_id: uuid.UUID,
        port: int,
        command: list[str],
        env: dict[str, str],
        log_path: Path,
    ) -> ModelProcess:
        with log_path.open("ab") as log:
            # Its own session: a Ctrl-C meant for the deployer's terminal does not reach the
            # servers, which the deployer stops itself on shutdown.
            popen = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=SOURCE_ROOT,
                env=env,
                start_new_session=True,
            )
        return ModelProcess(deployment_id, port, popen.pid, log_path, popen)

    def adopt(self, deployment_id: uuid.UUID, pid: int, port: int) -> bool:
        """Take over a server an earlier deployer left running; False if it is gone."""
        if not is_model_server(pid, port):
            return False
        log_path = self.logs_dir / f"{deployment_id}.log"
        self._processes[deployment_id] = ModelProcess(deployment_id, port, pid, log_path, None)
        self._reserved.add(port)
        return True

    def servers_held(self) -> int:
        """Model servers of this deployer running or about to start (one port each): what the
        host's capacity counts."""
        return len(self._reserved)

    def is_running(self, deployment_id: uuid.UUID) -> bool:
        process = self._processes.get(deployment_id)
        return process is not None and process.exit_code() is None

    async def wait_ready(
        self, process: ModelProcess, client: httpx.AsyncClient, timeout_s: float
    ) -> None:
        """Poll `/readyz` until it answers 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout_s
        url = f"{self.url(process.port)}/readyz"
        while time.monotonic() < deadline:
            code = process.exit_code()
            if code is not None:
                tail = self.log_tail(process)
                raise ModelServerFailed(
                    f"model server exited with code {code} before it was ready: {tail}"
                )
            with contextlib.suppress(httpx.TransportError):
                response = await client.get(url, timeout=2.0)
                if response.status_code == 200:
                    return
            await asyncio.sleep(0.2)
        raise ModelServerFailed(
            f"model server not ready after {timeout_s:.0f}s: {self.log_tail(process)}"
        )

    async def stop(self, deployment_id: uuid.UUID, timeout_s: float = 10.0) -> None:
        process = self._processes.pop(deployment_id, None)
        if process is None:
            return
        self._reserved.discard(process.port)
        await asyncio.to_thread(_terminate, process, timeout_s)
        logger.info("stopped model server %s (pid %d)", deployment_id, process.pid)

    async def stop_all(self, timeout_s: float = 10.0) -> None:
        await asyncio.gather(*(self.stop(d, timeout_s) for d in list(self._processes)))

    def log_tail(self, process: ModelProcess) -> str:
        return log_tail(process.log_path, _LOG_TAIL_LINES)


def _terminate(process: ModelProcess, timeout_s: float) -> None:
    """SIGTERM (uvicorn shuts down gracefully), then SIGKILL if it lingers."""
    if process.popen is not None:
        if process.popen.poll() is None:
            process.popen.terminate()
            try:
                process.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait(5)
        return
    try:
        terminate([psutil.Process(process.pid)], timeout_s)
    except psutil.NoSuchProcess:
        pass
