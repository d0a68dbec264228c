"""start_stack / stop_stack end to end, with stand-in services as real processes.

The real services are written elsewhere; tests/cli/stub_project holds tiny stand-ins
(`services.<name>` answering /readyz, `shared.migrate` writing to Postgres) so the
orchestration (infrastructure, migrations, env wiring, readiness, stop) runs for real.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import psutil
import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.stack import (
    SERVICES,
    StackError,
    StackPartlyRunning,
    lifecycle,
    readiness,
    stack_status,
    start_stack,
    stop_stack,
)
from cli.stack.embedded_postgres import plain_url
from cli.stack.state import StackInfo, load_state, save_state
from cli.stack.supervisor import ProcessRecord, record_for_pid, started_for

STUB_PROJECT = Path(__file__).parent / "stub_project"


@pytest.fixture
def stub_project(monkeypatch):
    monkeypatch.setattr(lifecycle, "REPO_ROOT", STUB_PROJECT)


@pytest.fixture
def port_env(free_ports) -> dict[str, str]:
    ports = free_ports(len(SERVICES))
    return {svc.port_var: str(port) for svc, port in zip(SERVICES, ports, strict=True)}


@pytest.fixture
def stack_home(home):
    yield home
    stop_stack(home.root)  # whatever a failing test left running


def record_running_stack(home, process: ProcessRecord) -> None:
    save_state(
        home,
        StackInfo(home=home.root, services={"auth": "http://127.0.0.1:1"}, processes=[process]),
    )


def test_second_up_reports_the_running_stack_and_starts_nothing(stack_home, sleeper):
    live = record_for_pid("auth", sleeper().pid, url="http://127.0.0.1:1")
    record_running_stack(stack_home, live)

    info = start_stack(stack_home.root, timeout=5)

    assert info.already_running
    assert [rec.pid for rec in info.processes] == [live.pid]
    assert not stack_home.log_file("nats").exists(), "a second up started NATS"

    result = CliRunner().invoke(app, ["up", "--timeout", "5"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "already running" in result.output
    assert str(live.pid) in result.output


def test_partly_running_stack_is_reported_not_restarted(stack_home, sleeper):
    live = record_for_pid("nats", sleeper().pid)
    dead = ProcessRecord("auth", live.pid, create_time=live.create_time - 10)
    save_state(stack_home, StackInfo(home=stack_home.root, processes=[live, dead]))

    with pytest.raises(StackPartlyRunning, match="auth stopped"):
        start_stack(stack_home.root, timeout=5)


def test_stale_state_is_forgotten(stack_home, sleeper):
    proc = sleeper()
    record = record_for_pid("auth", proc.pid)
    proc.kill()
    proc.wait()
    record_running_stack(stack_home, record)

    assert lifecycle.running_stack(stack_home) is None
    assert load_state(stack_home) is None


def child_pids(home) -> list[int]:
    return [int(p.read_text()) for p in home.run.glob("stub-*-child.pid")]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def test_full_cycle_with_stand_in_services(stack_home, stub_project, port_env, monkeypatch):
    # No external URLs: this test is about the embedded NATS and Postgres.
    monkeypatch.delenv("NEXUS_DATABASE_URL", raising=False)
    monkeypatch.delenv("NEXUS_NATS_URL", raising=False)
    info = start_stack(stack_home.root, port_env, timeout=60)

    assert not info.already_running, info
    assert [rec.name for rec in info.processes] == ["nats", "postgres", *info.services]
    assert info.services["trainer"] == f"http://127.0.0.1:{port_env['NEXUS_TRAINER_PORT']}"
    assert set(info.timings) >= {"nats", "postgres", "migrate", "services", "total"}

    # The migration ran against the database the services are given.
    conn = await asyncpg.connect(plain_url(info.database_url))
    assert await conn.fetchval("select count(*) from stub_migrated") == 1
    await conn.close()

    async with httpx.AsyncClient() as client:
        env = (await client.get(f"{info.services['validator']}/env")).json()
    assert env["NEXUS_DATABASE_URL"] == info.database_url
    assert env["NEXUS_NATS_URL"] == info.nats_url
    assert env["NEXUS_ENV"] == "development"
    assert env["NEXUS_HOME"] == str(stack_home.root)
    assert env["NEXUS_ARTIFACTS"] == f"file://{stack_home.artifacts}"
    assert env["NEXUS_AUTH_URL"] == info.services["auth"]
    assert Path(env["NEXUS_JWT_SIGNING_KEY_FILE"]).read_bytes().startswith(b"-----BEGIN")
    assert Path(env["NEXUS_INTERNAL_TOKEN_FILE"]).is_file()

    rows = {row.name: row for row in stack_status(stack_home)}
    assert all(row.alive for row in rows.values())
    assert {rows[svc.name].ready for svc in SERVICES} == {"200"}
    assert rows["nats"].ready == "listening"

    assert start_stack(stack_home.root, port_env, timeout=5).already_running

    children = child_pids(stack_home)
    assert len(children) == len(SERVICES)
    # A model server or node a restarted service adopted: started for this stack (so it has
    # its NEXUS_HOME) but no longer any service's child. Another stack's must be left alone.
    adopted = _detached_sleeper({**os.environ, "NEXUS_HOME": str(stack_home.root)})
    strangers = _detached_sleeper({**os.environ, "NEXUS_HOME": str(stack_home.root / "other")})
    try:
        stopped = stop_stack(stack_home.root)

        assert set(stopped) == {"nats", "postgres", *info.services, "1 more of its processes"}
        assert all(gone(rec.pid) for rec in info.processes)
        assert all(gone(pid) for pid in children), "a service's child outlived `down`"
        assert adopted.poll() is not None, "an adopted process outlived `down`"
        assert strangers.poll() is None, "`down` stopped another stack's process"
        assert load_state(stack_home) is None
    finally:
        for sleeper in (adopted, strangers):
            sleeper.kill()
            sleeper.wait()


def _detached_sleeper(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], env=env, start_new_session=True
    )


def test_service_that_dies_fails_fast_with_its_log(stack_home, stub_project, port_env):
    env = {
        **port_env,
        "NEXUS_DATABASE_URL": "postgresql+asyncpg://unused@/x",
        "NEXUS_STUB_SKIP_DB": "1",
        "NEXUS_STUB_DIE": "trainer",
    }

    with pytest.raises(StackError, match="trainer is not ready: exited") as failure:
        start_stack(stack_home.root, env, timeout=30)

    assert "told to die" in str(failure.value)  # the tail of logs/trainer.log
    assert load_state(stack_home) is None, "a failed up left processes recorded"
    assert all(gone(pid) for pid in child_pids(stack_home))


def test_services_are_forked_warm_once_the_migrations_are_done(stack_home, stub_project, port_env):
    env = {
        **port_env,
        "NEXUS_DATABASE_URL": "postgresql+asyncpg://unused@/x",
        "NEXUS_STUB_SKIP_DB": "1",
        "NEXUS_STUB_MIGRATE_S": "1.5",
    }
    info = start_stack(stack_home.root, env, timeout=30)
    with httpx.Client() as client:
        for name, url in info.services.items():
            started = client.get(f"{url}/started").json()
            assert started["migrated_before_start"], f"{name} started before the migrations"
            assert started["forked_warm"], f"{name} was not forked from the warm server"
    # The fork server ends once the services are forked; they go on without it.
    ours = {rec.pid for rec in info.processes} | set(child_pids(stack_home))
    assert {proc.pid for proc in started_for(stack_home.root, since=0)} <= ours


def test_services_start_as_new_interpreters_when_told(stack_home, stub_project, port_env):
    env = {
        **port_env,
        "NEXUS_DATABASE_URL": "postgresql+asyncpg://unused@/x",
        "NEXUS_STUB_SKIP_DB": "1",
        "NEXUS_SERVICE_START": "exec",
    }
    info = start_stack(stack_home.root, env, timeout=30)
    with httpx.Client() as client:
        for name, url in info.services.items():
            started = client.get(f"{url}/started").json()
            assert started["migrated_before_start"] and not started["forked_warm"], name
    assert not stack_home.log_file("service-fork-server").exists()


def test_failed_migration_stops_what_was_started(stack_home, stub_project, port_env):
    env = {
        **port_env,
        "NEXUS_DATABASE_URL": "postgresql+asyncpg://unused@/x",
        "NEXUS_STUB_MIGRATE_FAIL": "1",
    }

    with pytest.raises(StackError, match="migrations failed") as failure:
        start_stack(stack_home.root, env, timeout=30)

    assert "told to by NEXUS_STUB_MIGRATE_FAIL" in str(failure.value)
    assert load_state(stack_home) is None
    # Nothing outlives the failure: not the fork server that was importing the services.
    assert not started_for(stack_home.root, since=0), "a process outlived the failed up"


def test_taken_port_is_named(stack_home, port_env):
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", int(port_env["NEXUS_MEMORY_PORT"])))
        squatter.listen()
        with pytest.raises(StackError, match="NEXUS_MEMORY_PORT"):
            start_stack(stack_home.root, port_env, timeout=5)
    assert not stack_home.log_file("nats").exists()


def test_readiness_counts_only_our_own_listener(sleeper, fake_api):
    _api, our_url = fake_api  # served from inside this test process
    assert readiness.serves_port(record_for_pid("auth", os.getpid()), our_url)

    # Alive, but the port belongs to someone else: that server's 200 is not our service.
    stranger_port = urlsplit(our_url).port
    assert not readiness.serves_port(
        record_for_pid("auth", sleeper().pid), f"http://127.0.0.1:{stranger_port}"
    )
