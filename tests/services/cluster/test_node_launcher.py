"""Nodes forked from the warm fork server: real processes that run the node's code, are
known by their log file, follow the service that asked for them, and outlive the server; and
a cold start whenever the server is not ready."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import psutil
import pytest
from nats.js.errors import NotFoundError

from services.cluster.process_manager import (
    AdoptedProcess,
    NodePlan,
    NodeProcessManager,
    NodesClosed,
    local_node_process,
    node_environment,
    node_fork_launcher,
    plan_nodes,
)
from shared.bus import STREAM_CONFIG, STREAM_NAME
from shared.fork_launcher import ForkLauncher


@pytest.fixture(scope="module")
async def stream(nats_url: str) -> None:
    """The NEXUS stream the nodes register on (the services create it as they start)."""
    connection = await nats.connect(nats_url)
    try:
        js = connection.jetstream()
        try:
            await js.stream_info(STREAM_NAME)
        except NotFoundError:
            await js.add_stream(STREAM_CONFIG)
    finally:
        await connection.close()


@pytest.fixture
def env(nats_url: str, tmp_path: Path, stream: None) -> dict[str, str]:
    return node_environment(
        {
            "NEXUS_NATS_URL": nats_url,
            "NEXUS_HOME": str(tmp_path),
            "NEXUS_ARTIFACTS": f"file://{tmp_path}/artifacts",
            "NEXUS_ENV": "test",
        }
    )


@pytest.fixture
def launcher(env: dict[str, str], tmp_path: Path) -> Iterator[ForkLauncher]:
    launcher = node_fork_launcher(env, tmp_path)
    launcher.start()
    yield launcher
    launcher.stop()


def wait_for_line(path: Path, needle: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared in {path}: {text[-2000:]}")


def test_a_forked_node_runs_the_node_and_is_known_by_its_log_file(
    launcher: ForkLauncher, env: dict[str, str], tmp_path: Path
) -> None:
    assert launcher.ready
    manager = NodeProcessManager(tmp_path / "nodes", env, "127.0.0.1", launcher)
    cluster_id = uuid.uuid4()
    plan = plan_nodes(cluster_id, {"parameter_servers": 0, "workers": 1, "validators": 0})
    try:
        [node] = manager.start(cluster_id, plan, workflow_id=None, tenant_id="t-fork")
        process = psutil.Process(node.pid)
        server = process.parent()
        assert server is not None and "shared.fork_server" in server.cmdline()
        # It is the node: registered on NATS under its own pid, logging to its own file.
        log = wait_for_line(tmp_path / "nodes" / f"{node.node_id}.log", "registered")
        assert str(node.pid) in log
        assert local_node_process(node.node_id, node.pid) is not None
        assert local_node_process("someone-else-worker-0", node.pid) is None
        # The server going away leaves its nodes running.
        launcher.stop()
        time.sleep(0.5)
        assert process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    finally:
        manager.stop_all(grace_s=5)
    assert not psutil.pid_exists(node.pid) or process.status() == psutil.STATUS_ZOMBIE


def _one_worker(
    env: dict[str, str], tmp_path: Path, launcher: ForkLauncher
) -> tuple[NodeProcessManager, uuid.UUID, list[NodePlan]]:
    """A manager starting nodes through `launcher`, and a cluster of one worker to start."""
    manager = NodeProcessManager(tmp_path / "nodes", env, "127.0.0.1", launcher)
    cluster_id = uuid.uuid4()
    plan = plan_nodes(cluster_id, {"parameter_servers": 0, "workers": 1, "validators": 0})
    return manager, cluster_id, plan


def test_nodes_start_cold_while_the_fork_server_is_not_ready(
    env: dict[str, str], tmp_path: Path
) -> None:
    unstarted = node_fork_launcher(env, tmp_path)
    manager, cluster_id, plan = _one_worker(env, tmp_path, unstarted)
    try:
        [node] = manager.start(cluster_id, plan, workflow_id=None, tenant_id="t-cold")
        process = psutil.Process(node.pid)
        assert process.parent() is not None and process.parent().pid == psutil.Process().pid
        assert node.node_id in process.cmdline()
        wait_for_line(tmp_path / "nodes" / f"{node.node_id}.log", "registered")
    finally:
        manager.stop_all(grace_s=5)


def test_a_node_asked_for_while_the_fork_server_imports_is_forked_once_it_is_ready(
    env: dict[str, str], tmp_path: Path
) -> None:
    # A cold start now would import torch beside the fork server, on the same cores.
    launcher = node_fork_launcher(env, tmp_path)
    manager, cluster_id, plan = _one_worker(env, tmp_path, launcher)
    launcher.start_in_background()
    try:
        deadline = time.monotonic() + 10
        while not launcher.starting and time.monotonic() < deadline:
            time.sleep(0.01)
        assert launcher.starting and not launcher.ready
        [node] = manager.start(cluster_id, plan, workflow_id=None, tenant_id="t-wait")
        server = psutil.Process(node.pid).parent()
        assert server is not None and "shared.fork_server" in server.cmdline()
        wait_for_line(tmp_path / "nodes" / f"{node.node_id}.log", "registered")
    finally:
        manager.stop_all(grace_s=5)
        launcher.stop()


def test_a_fork_server_that_died_is_not_used_and_comes_back(
    launcher: ForkLauncher, env: dict[str, str], tmp_path: Path
) -> None:
    process = launcher._process
    assert process is not None
    process.kill()
    process.wait()
    assert not launcher.ready
    assert launcher.fork(["--help"], env, tmp_path / "x.log") is None
    launcher.start()
    assert launcher.ready


def test_a_forked_node_that_refuses_its_arguments_says_so_and_the_server_goes_on(
    launcher: ForkLauncher, env: dict[str, str], tmp_path: Path
) -> None:
    """Bad arguments: the node's argument parser refuses them in the child, as it would in a
    new interpreter, and the server goes on serving."""
    log = tmp_path / "bad.log"
    pid = launcher.fork(["--role", "astronaut"], env, log)
    assert pid is not None
    wait_for_line(log, "invalid choice: 'astronaut'")
    assert launcher.ready
    server = launcher._process
    assert server is not None and AdoptedProcess(psutil.Process(server.pid)).poll() is None


def test_a_forked_nodes_exit_code_reaches_the_manager(
    launcher: ForkLauncher, env: dict[str, str], tmp_path: Path
) -> None:
    """Killed by a signal, the node's code says which, as a child's would (-9 for SIGKILL)."""
    manager = NodeProcessManager(tmp_path / "nodes", env, "127.0.0.1", launcher)
    cluster_id = uuid.uuid4()
    plan = plan_nodes(cluster_id, {"parameter_servers": 0, "workers": 1, "validators": 0})
    [node] = manager.start(cluster_id, plan, workflow_id=None, tenant_id="t-exit")
    wait_for_line(tmp_path / "nodes" / f"{node.node_id}.log", "registered")
    psutil.Process(node.pid).kill()
    deadline = time.monotonic() + 10
    ended: dict[str, int | None] = {}
    while not ended and time.monotonic() < deadline:
        ended = manager.exited()
        time.sleep(0.05)
    assert ended == {node.node_id: -9}


def test_a_node_whose_start_outlasts_the_services_stop_is_stopped_too(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A start waiting for the fork server while the service stops its nodes (shutting
    down) must not leave a node behind once the server is ready; later starts refuse."""
    launcher = node_fork_launcher(env, tmp_path)
    manager, cluster_id, plan = _one_worker(env, tmp_path, launcher)
    launcher.start_in_background()
    outcome: list[BaseException | None] = []

    def start() -> None:
        try:
            manager.start(cluster_id, plan, workflow_id=None, tenant_id="t-late")
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        deadline = time.monotonic() + 10
        while not launcher.starting and time.monotonic() < deadline:
            time.sleep(0.01)
        starting = threading.Thread(target=start)
        starting.start()
        time.sleep(0.2)  # the start is waiting for the fork server
        manager.stop_all(grace_s=5)
        starting.join(timeout=60)
        assert len(outcome) == 1 and isinstance(outcome[0], NodesClosed), outcome
        # It was started once the server was ready (not refused before), then stopped.
        assert "while its nodes were starting" in str(outcome[0])
        server = launcher.pid
        assert server is not None
        assert not _live_children(server), "the late node outlived the service's stop"
        with pytest.raises(NodesClosed):
            manager.start(cluster_id, plan, workflow_id=None, tenant_id="t-late")
    finally:
        launcher.stop()


def _live_children(pid: int) -> list[psutil.Process]:
    live = []
    for child in psutil.Process(pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                live.append(child)
        except psutil.NoSuchProcess:
            pass
    return live
