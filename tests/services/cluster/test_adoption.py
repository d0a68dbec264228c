"""Whose nodes a restarted cluster service may adopt: those of a cluster it owns, or of one
whose owner was a process on this host that is gone; never a live sibling's or another
host's. (The whole path, a service killed and restarted mid-training, is an e2e test.)"""

from __future__ import annotations

import subprocess
import sys

from services.cluster.process_manager import NodeProcessManager
from services.cluster.service.adoption import orphaned
from services.cluster.state import ClusterState, owner_id


def _state() -> ClusterState:
    manager = NodeProcessManager(log_dir=None, env={}, host="127.0.0.1")  # type: ignore[arg-type]
    return ClusterState(manager=manager, metrics=None)  # type: ignore[arg-type]


def test_only_a_dead_owner_on_this_host_gives_its_clusters_up() -> None:
    state = _state()
    host = owner_id().rsplit(":", 1)[0]
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    live_sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert orphaned(state.owner, state)
        assert orphaned(f"{host}:{dead_pid.pid}", state)
        assert not orphaned(f"{host}:{live_sibling.pid}", state)
        assert not orphaned(f"another-host:{dead_pid.pid}", state)
        assert not orphaned(None, state)
    finally:
        live_sibling.kill()
        live_sibling.wait()
