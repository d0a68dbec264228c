"""Model servers forked from the warm fork server: they serve the model, are known by the
port they listen on, and their exit codes come back through the server that reaps them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from services.deployer.process_manager import (
    ModelProcessManager,
    is_model_server,
    model_fork_launcher,
    model_server_environment,
)
from shared.fork_launcher import ForkLauncher
from tests.infrastructure import model_ports


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkLauncher]:
    launcher = model_fork_launcher(model_server_environment(), tmp_path_factory.mktemp("logs"))
    launcher.start()
    yield launcher
    launcher.stop()


async def test_a_forked_model_server_serves_and_is_known_by_its_port(
    launcher: ForkLauncher, digits_model_dir: Path, tmp_path: Path
) -> None:
    assert launcher.ready
    # Listening on every interface (as in a container), reached on the loopback address.
    ports = model_ports()[500:600]
    manager = ModelProcessManager("127.0.0.1", ports, tmp_path, launcher, bind_host="0.0.0.0")
    port = manager.reserve_port(None)
    deployment = uuid.uuid4()
    process = manager.start(
        deployment,
        f"file://{digits_model_dir}",
        port,
        model_id=uuid.uuid4(),
        name="d",
        version=1,
        tenant_id=None,
    )
    try:
        assert process.popen is None  # forked, not a child of ours
        parent = psutil.Process(process.pid).parent()
        assert parent is not None and parent.pid == launcher.pid
        async with httpx.AsyncClient(trust_env=False) as client:
            await manager.wait_ready(process, client, timeout_s=30)
            answer = await client.post(f"{manager.url(port)}/predict", json={"rows": [[0] * 64]})
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 1
        assert is_model_server(process.pid, port)
        listening = psutil.Process(process.pid).net_connections(kind="tcp")
        assert {c.laddr.ip for c in listening if c.status == psutil.CONN_LISTEN} == {"0.0.0.0"}
        assert not is_model_server(process.pid, port + 1)
        psutil.Process(process.pid).kill()
        for _ in range(100):
            if process.exit_code() is not None:
                break
            await asyncio.sleep(0.05)
        assert process.exit_code() == -9
    finally:
        await manager.stop_all(timeout_s=5)
