"""Starts and stops node processes: each node is `python -m services.cluster.node`, a real OS
process with its own log file. The manager remembers the processes it started, and those it
adopted from a predecessor that died, so that a cluster's deletion, the end of its workflow,
or the service's shutdown can stop them."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil
from opentelemetry import propagate

from shared.fork_launcher import SERVER_MODULE, ForkLauncher
from shared.processes import logging_to, terminate

logger = logging.getLogger(__name__)

# The repository root, so `-m services.cluster.node` resolves however the service was started.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
NODE_ROLES = ("parameter_server", "worker", "validator")
# The pid of the service a node follows (its parent is the fork server when it was forked).
OWNER_PID_VARIABLE = "NEXUS_NODE_OWNER_PID"
# What a forked node runs, and what the fork server imports for it beforehand.
NODE_MAIN = "services.cluster.node.__main__:main"
NODE_WARM_UP = "services.cluster.node.rendezvous:prewarm_training_stack"


def node_fork_launcher(env: dict[str, str], log_dir: Path) -> ForkLauncher:
    """The fork server of a host's nodes (shared/fork_server.py)."""
    server_args = ["--warm", NODE_WARM_UP, "--main", NODE_MAIN]
    return ForkLauncher(server_args, env, PROJECT_ROOT, log_dir / "node-fork-server.log")


def trace_context_env() -> dict[str, str]:
    """The current trace as W3C `TRACEPARENT`/`TRACESTATE` variables: a node registers
    within the trace of the workflow that started it, so one trace covers all five phases."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {key.upper(): value for key, value in carrier.items()}


@dataclass(frozen=True)
class NodePlan:
    node_id: str
    role: str
    rank: int


@dataclass(frozen=True)
class StartedNode:
    node_id: str
    role: str
    rank: int
    pid: int


def plan_nodes(cluster_id: uuid.UUID, layout: dict[str, int]) -> list[NodePlan]:
    """Node ids are `<first 8 hex of the cluster id>-<role>-<rank>`, e.g. `1a2b3c4d-worker-0`."""
    prefix = cluster_id.hex[:8]
    counts = {
        "parameter_server": layout["parameter_servers"],
        "worker": layout["workers"],
        "validator": layout["validators"],
    }
    return [
        NodePlan(f"{prefix}-{role.replace('_', '-')}-{rank}", role, rank)
        for role in NODE_ROLES
        for rank in range(counts[role])
    ]


def node_command(
    cluster_id: uuid.UUID,
    node_id: str,
    role: str,
    rank: int,
    *,
    tenant_id: str,
    workflow_id: uuid.UUID,
    host: str = "127.0.0.1",
) -> list[str]:
    """How a node process is started, here or by hand on another host (`host` is the address
    the other nodes reach it on)."""
    return [
        sys.executable,
        "-m",
        "services.cluster.node",
        "--cluster-id",
        str(cluster_id),
        "--node-id",
        node_id,
        "--role",
        role,
        "--rank",
        str(rank),
        "--tenant-id",
        tenant_id,
        "--workflow-id",
        str(workflow_id),
        "--host",
        host,
    ]


class AdoptedProcess:
    """A node process that is not this service's child — one a predecessor started, or one
    the fork server forked — behind the part of `Popen`'s interface the manager uses: its
    exit is seen, but its exit code is not."""

    def __init__(self, process: psutil.Process) -> None:
        self._process = process
        self.pid = process.pid

    def poll(self) -> int | None:
        """None while it runs; once it is gone, 0 (its real code is its parent's to know)."""
        try:
            running = self._process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            running = False
        return None if running else 0

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            self._process.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> None:
        try:
            self._process.wait(timeout)
        except psutil.TimeoutExpired as exc:
            raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0) from exc
        except psutil.NoSuchProcess:
            pass


class ForkedProcess(AdoptedProcess):
    """A node the fork server forked: not our child, but the server reports its exit code."""

    def __init__(self, process: psutil.Process, launcher: ForkLauncher) -> None:
        super().__init__(process)
        self._launcher = launcher
        self._code: int | None = None

    def poll(self) -> int | None:
        if self._code is None:
            self._code = self._launcher.exit_code(self.pid)
        if self._code is not None:
            return self._code
        gone = super().poll()
        # Gone and not yet reported: the report is on its way, unless the server is gone too.
        return None if gone is None or self._launcher.ready else gone


def local_node_process(node_id: str, pid: int) -> psutil.Process | None:
    """The process `pid` on this host when it is node `node_id`'s, else None (the pid is of
    another host, gone, or reused by something else)."""
    try:
        process = psutil.Process(pid)
        return process if runs_node(process, node_id) else None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def runs_node(process: psutil.Process, node_id: str) -> bool:
    """Whether `process` is node `node_id`: started cold, its command line names it; forked,
    it has the fork server's command line and its output open in the node's log file."""
    command = process.cmdline()
    if "services.cluster.node" in command:
        return node_id in command
    if SERVER_MODULE in command and NODE_MAIN in command:
        log_name = f"{node_id}.log"
        return any(Path(f.path).name == log_name for f in process.open_files())
    return False


class NodesClosed(RuntimeError):
    """The service stopped its nodes (it is shutting down): it starts no more."""


# A node started while the service was stopping its nodes is stopped again at once.
_LATE_NODE_GRACE_S = 2.0


class NodeProcessManager:
    def __init__(
        self, log_dir: Path, env: dict[str, str], host: str, launcher: ForkLauncher | None = None
    ) -> None:
        self._log_dir = log_dir
        # The nodes' environment; they follow this service by its pid, whoever forks them.
        self.env = {**env, OWNER_PID_VARIABLE: str(os.getpid())}
        self._host = host
        self.launcher = launcher
        self._lock = threading.Lock()
        self._processes: dict[str, subprocess.Popen[bytes] | AdoptedProcess] = {}
        # Node processes told to stop and not yet gone: they still take room on the host.
        self.stopping = 0
        self._cluster_of: dict[str, uuid.UUID] = {}
        self._closed = False  # stop_all ran: the service is shutting down

    def start(
        self,
        cluster_id: uuid.UUID,
        plans: list[NodePlan],
        *,
        workflow_id: uuid.UUID | None,
        tenant_id: str,
    ) -> list[StartedNode]:
        """Start one process per plan (blocking: call it from a thread)."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        started = []
        for plan in plans:
            if self._closed:
                raise NodesClosed("the service is stopping: no node starts now")
            # A standalone cluster's events carry the cluster id as their workflow id.
            command = node_command(
                cluster_id,
                plan.node_id,
                plan.role,
                plan.rank,
                tenant_id=tenant_id,
                workflow_id=workflow_id or cluster_id,
                host=self._host,
            )
            log_path = self._log_dir / f"{plan.node_id}.log"
            # The node rotates the file it logs to (shared.telemetry).
            env = {**self.env, **trace_context_env(), **logging_to(log_path)}
            forked = self._fork(command, env, log_path)
            if forked is None and self._closed:  # its fork server was stopped with the service
                raise NodesClosed("the service is stopping: no node starts now")
            process = forked or self._start_cold(command, env, log_path)
            with self._lock:
                closed = self._closed
                self._processes[plan.node_id] = process
                self._cluster_of[plan.node_id] = cluster_id
            if closed:
                # It started while the service stopped its nodes (the start waited for the
                # fork server): left running, it would outlive the service.
                self._stop([plan.node_id], _LATE_NODE_GRACE_S)
                raise NodesClosed("the service stopped while its nodes were starting")
            started.append(StartedNode(plan.node_id, plan.role, plan.rank, process.pid))
            logger.info("started node %s (pid %d)", plan.node_id, process.pid)
        return started

    def _fork(
        self, command: list[str], env: dict[str, str], log_path: Path
    ) -> ForkedProcess | None:
        if self.launcher is None:
            return None
        # The fork server runs the node's `main` with the arguments after `-m <module>`.
        pid = self.launcher.fork(command[3:], env, log_path)
        if pid is None:
            return None
        try:
            return ForkedProcess(psutil.Process(pid), self.launcher)
        except psutil.NoSuchProcess:
            return None  # it died at once; a cold start says why in its log

    def _start_cold(
        self, command: list[str], env: dict[str, str], log_path: Path
    ) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                command,
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C meant for the service does not hit the nodes; they
                # follow the service by its pid instead.
                start_new_session=True,
            )

    def adopt(self, cluster_id: uuid.UUID, node_id: str, process: psutil.Process) -> None:
        """Take on a running node a predecessor started (see `local_node_process`)."""
        with self._lock:
            self._processes[node_id] = AdoptedProcess(process)
            self._cluster_of[node_id] = cluster_id
        logger.info("adopted node %s (pid %d)", node_id, process.pid)

    def has(self, node_id: str) -> bool:
        with self._lock:
            return node_id in self._processes

    def clusters(self) -> set[uuid.UUID]:
        with self._lock:
            return set(self._cluster_of.values())

    def exited(self) -> dict[str, int | None]:
        """Reap processes that ended on their own: node id -> exit code (None for an adopted
        process, whose code only its parent learns)."""
        ended: dict[str, int | None] = {}
        with self._lock:
            for node_id, process in list(self._processes.items()):
                code = process.poll()
                if code is not None:
                    unknown = type(process) is AdoptedProcess  # a predecessor's child
                    ended[node_id] = None if unknown else code
                    del self._processes[node_id]
                    del self._cluster_of[node_id]
        return ended

    def fence(self, node_ids: list[str]) -> list[str]:
        """Kill the nodes of ours declared lost while their process still runs (hung, or cut
        off): a job that went on without one must never hear from it again. Their exits
        are reaped by `exited` later, as the exit of a node already lost."""
        with self._lock:
            running = [(n, self._processes[n]) for n in node_ids if n in self._processes]
        killed = []
        for node_id, process in running:
            if process.poll() is None:
                process.kill()
                killed.append(node_id)
        return killed

    def stop_cluster(self, cluster_id: uuid.UUID, pids: dict[str, int], grace_s: float) -> None:
        """Stop a cluster's nodes: those this manager started, and (after a service restart)
        any still running on this host under the recorded pid with the node's command line."""
        with self._lock:
            mine = [n for n, c in self._cluster_of.items() if c == cluster_id]
        self._stop(mine, grace_s)
        for node_id, pid in pids.items():
            if node_id not in mine:
                _stop_foreign(node_id, pid, grace_s)

    def stop_all(self, grace_s: float) -> None:
        """Stop every node, and start none after (the service is shutting down)."""
        with self._lock:
            self._closed = True
            mine = list(self._processes)
        self._stop(mine, grace_s)

    def _stop(self, node_ids: list[str], grace_s: float) -> None:
        with self._lock:
            processes = {n: self._processes.pop(n) for n in node_ids if n in self._processes}
            for node_id in processes:
                self._cluster_of.pop(node_id, None)
            self.stopping += len(processes)
        try:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for node_id, process in processes.items():
                try:
                    process.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    logger.warning("node %s ignored SIGTERM for %.0f s; killing", node_id, grace_s)
                    process.kill()
                    process.wait()
        finally:
            with self._lock:
                self.stopping -= len(processes)


def _stop_foreign(node_id: str, pid: int, grace_s: float) -> None:
    process = local_node_process(node_id, pid)
    if process is not None:  # else the pid now belongs to something else, or to nobody
        terminate([process], grace_s)


def node_environment(overrides: dict[str, str]) -> dict[str, str]:
    """The nodes' environment: the service's own plus the NEXUS_* settings it resolved."""
    env = dict(os.environ)
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
