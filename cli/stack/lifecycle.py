"""Start and stop the whole local stack: NATS, Postgres, migrations, the six services."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from cli.stack import supervisor
from cli.stack.embedded_nats import start_nats
from cli.stack.embedded_postgres import start_postgres
from cli.stack.errors import StackError, StackPartlyRunning
from cli.stack.home import NexusHome, resolve_home
from cli.stack.ports import port_is_free
from cli.stack.readiness import wait_ready
from cli.stack.secrets import ensure_secrets
from cli.stack.services import SERVICES, Service, stack_env
from cli.stack.state import StackInfo, clear_state, load_state, save_state
from cli.stack.supervisor import ProcessRecord
from shared.fork_launcher import ForkLauncher
from shared.processes import log_tail, logging_to, terminate

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = ("nats", "postgres")
# What each forked service runs: `python -m services.<name>`, in the warm server's child.
SERVICE_MAIN = "shared.fork_server:run_module"
# `exec` starts every service as a new interpreter instead of forking it.
SERVICE_START_VARIABLE = "NEXUS_SERVICE_START"

Reporter = Callable[[str], None]


@contextmanager
def _locked(home: NexusHome) -> Iterator[None]:
    """Serialise `up`/`down` on one home: two concurrent `up`s would start two stacks."""
    home.run.mkdir(parents=True, exist_ok=True)
    with open(home.run / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _home_for(home: str | os.PathLike[str] | None, overrides: Mapping[str, str]) -> NexusHome:
    return resolve_home(home if home is not None else overrides.get("NEXUS_HOME"))


def running_stack(home: NexusHome) -> StackInfo | None:
    """The recorded stack if every process of it is alive; None (and no state) if none is.

    Raises StackPartlyRunning when only some are alive: starting over that would leave
    orphans, and quietly restarting would hide why something died.
    """
    info = load_state(home)
    if info is None:
        return None
    alive = {rec.name for rec in info.processes if supervisor.is_alive(rec)}
    if not alive:
        clear_state(home)
        return None
    dead = [rec.name for rec in info.processes if rec.name not in alive]
    if dead:
        raise StackPartlyRunning(
            f"the stack under {home.root} is partly running: {', '.join(dead)} stopped, "
            f"{', '.join(sorted(alive))} still up. Run `nexus restart NAME` for each stopped "
            "one, or `nexus down`, then `nexus up`."
        )
    info.already_running = True
    return info


def _check_ports_free(env: Mapping[str, str]) -> None:
    for svc in SERVICES:
        port = svc.port(env)
        if not port_is_free(port):
            raise StackError(
                f"port {port} for {svc.name} is taken by another program; "
                f"stop it or choose another port with {svc.port_var}=..."
            )


def _migrate(home: NexusHome, env: Mapping[str, str], deadline: float) -> None:
    log_path = home.log_file("migrate")
    with open(log_path, "ab") as log:
        try:
            result = subprocess.run(
                [sys.executable, "-m", "shared.migrate"],
                env=dict(env),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=max(deadline - time.monotonic(), 1.0),
            )
        except subprocess.TimeoutExpired:
            raise StackError(f"migrations timed out; {log_path}:\n{log_tail(log_path)}") from None
    if result.returncode != 0:
        raise StackError(
            f"migrations failed (exit {result.returncode}); {log_path}:\n{log_tail(log_path)}"
        )


def _service_env(
    home: NexusHome, info: StackInfo, secrets_env: Mapping[str, str], overrides: Mapping[str, str]
) -> dict[str, str]:
    # Defaults < caller's overrides < wiring we must control (ports->URLs, infra URLs).
    env = {**os.environ, "NEXUS_ENV": "development", **secrets_env, **overrides}
    env.update(stack_env(env))
    env["NEXUS_DATABASE_URL"] = info.database_url
    env["NEXUS_NATS_URL"] = info.nats_url
    env["NEXUS_HOME"] = str(home.root)
    env["NEXUS_ARTIFACTS"] = info.artifacts
    return _with_checkout_on_path(env)


def _with_checkout_on_path(env: dict[str, str]) -> dict[str, str]:
    # Services run as `python -m services.<name>` from the checkout, whatever our cwd.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _spawn_service(
    home: NexusHome, svc: Service, env: Mapping[str, str], url: str
) -> ProcessRecord:
    """Start a service as a new interpreter (`python -m services.<name>`): seconds of imports."""
    return supervisor.spawn(
        svc.name,
        [sys.executable, "-m", svc.module],
        env=env,
        log_path=home.log_file(svc.name),
        cwd=REPO_ROOT,
        url=url,
    )


def _service_fork_launcher(home: NexusHome, env: Mapping[str, str]) -> ForkLauncher:
    """A fork server that imports all six services' modules once (shared/fork_server.py).

    Each service imports FastAPI, SQLAlchemy, FastStream, OpenTelemetry and pydantic: about
    1.3 s of CPU that six new interpreters would spend six times over on the same cores.
    The server does it once, beside NATS, Postgres and the migrations, then forks each
    service in milliseconds. It is started with the stack's NEXUS_HOME, which its children
    show in their environment, so `down` finds them as it finds everything else of the stack.
    """
    server_args = [arg for svc in SERVICES for arg in ("--warm", svc.app_module)]
    server_args += ["--main", SERVICE_MAIN]
    return ForkLauncher(server_args, dict(env), REPO_ROOT, home.log_file("service-fork-server"))


def _start_service(
    home: NexusHome,
    svc: Service,
    env: Mapping[str, str],
    url: str,
    launcher: ForkLauncher | None,
) -> ProcessRecord:
    """Fork the service from the warm server; start it as a new interpreter when there is
    none (NEXUS_SERVICE_START=exec) or it cannot (it died, or never got ready)."""
    log_path = home.log_file(svc.name)
    if launcher is not None:
        pid = launcher.fork([svc.module], {**env, **logging_to(log_path)}, log_path)
        if pid is not None:
            return supervisor.record_for_pid(
                svc.name, pid, owns_group=True, url=url, log=str(log_path)
            )
    return _spawn_service(home, svc, env, url)


def _timed(info: StackInfo, step: str, started: float) -> None:
    info.timings[step] = round(time.monotonic() - started, 3)


def _start(
    home: NexusHome, overrides: Mapping[str, str], deadline: float, report: Reporter
) -> StackInfo:
    base = {**os.environ, **overrides}
    _check_ports_free(base)
    secrets_env = ensure_secrets(home).env()
    info = StackInfo(home=home.root, started_at=time.time())
    info.artifacts = base.get("NEXUS_ARTIFACTS") or f"file://{home.artifacts}"

    # The services' modules are imported while NATS, Postgres and the migrations start.
    launcher = None
    if base.get(SERVICE_START_VARIABLE, "fork") != "exec":
        server_env = _with_checkout_on_path({**base, "NEXUS_HOME": str(home.root)})
        launcher = _service_fork_launcher(home, server_env)
        launcher.start_in_background()
    try:
        env = _start_infrastructure(home, info, base, secrets_env, overrides, deadline, report)
        t0 = time.monotonic()
        records = {}
        for svc in SERVICES:
            url = env[svc.url_var]
            info.services[svc.name] = url
            # Recorded as soon as it exists, so `down` can clean up after a failed `up`.
            records[svc.name] = _start_service(home, svc, env, url, launcher)
            info.processes.append(records[svc.name])
            save_state(home, info)
    finally:
        if launcher is not None:
            launcher.stop()  # the services it forked go on
    failures = wait_ready(records, info.services, deadline)
    if failures:
        raise StackError(
            "\n\n".join(
                f"{f.name} is not ready: {f.reason}; {f.log}:\n{log_tail(f.log)}" for f in failures
            )
        )
    _timed(info, "services", t0)
    report(f"services  ready  ({info.timings['services']:.2f}s)")
    return info


def _start_infrastructure(
    home: NexusHome,
    info: StackInfo,
    base: Mapping[str, str],
    secrets_env: Mapping[str, str],
    overrides: Mapping[str, str],
    deadline: float,
    report: Reporter,
) -> dict[str, str]:
    """NATS and Postgres (embedded unless their URLs are given), then the migrations; the
    environment the services are started with."""
    # Record each process as soon as it exists, so `down` can clean up after a failed `up`.
    t0 = time.monotonic()
    if base.get("NEXUS_NATS_URL"):
        info.nats_url = base["NEXUS_NATS_URL"]
    else:
        record = start_nats(home)
        info.processes.append(record)
        info.nats_url = record.url or ""
        save_state(home, info)
        _timed(info, "nats", t0)
        report(f"nats      {info.nats_url}  ({info.timings['nats']:.2f}s)")

    t0 = time.monotonic()
    if base.get("NEXUS_DATABASE_URL"):
        info.database_url = base["NEXUS_DATABASE_URL"]
    else:
        postgres = start_postgres(home)
        info.processes.append(postgres.record)
        info.database_url = postgres.url
        save_state(home, info)
        _timed(info, "postgres", t0)
        report(f"postgres  {postgres.socket_dir}  ({info.timings['postgres']:.2f}s)")

    env = _service_env(home, info, secrets_env, overrides)
    info.env = {key: value for key, value in env.items() if key.startswith("NEXUS_")}
    t0 = time.monotonic()
    _migrate(home, env, deadline)
    _timed(info, "migrate", t0)
    report(f"migrate   done  ({info.timings['migrate']:.2f}s)")
    return env


def start_stack(
    home: str | os.PathLike[str] | None = None,
    env_overrides: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    *,
    keep_on_failure: bool = False,
    report: Reporter | None = None,
) -> StackInfo:
    """Start the local stack under `home` and return once every service's /readyz is 200.

    `env_overrides` are applied on top of os.environ (ports, NEXUS_DATABASE_URL, ...).
    If the stack already runs, nothing is started and the returned info says
    `already_running`. On failure everything started here is stopped again (unless
    `keep_on_failure`) and StackError carries the failing log's tail.
    """
    overrides = dict(env_overrides or {})
    nexus_home = _home_for(home, overrides).ensure()
    report = report or (lambda _line: None)
    started = time.monotonic()
    with _locked(nexus_home):
        existing = running_stack(nexus_home)
        if existing is not None:
            return existing
        try:
            info = _start(nexus_home, overrides, started + timeout, report)
        except BaseException:
            if not keep_on_failure:
                _stop(nexus_home)
            raise
        info.timings["total"] = round(time.monotonic() - started, 3)
        save_state(nexus_home, info)
        return info


def _stop(home: NexusHome, timeout: float = 10.0) -> list[str]:
    info = load_state(home)
    if info is None:
        return []
    # Services first (they hold connections), then the infrastructure under them.
    services = [rec for rec in info.processes if rec.name not in INFRA]
    infra = [rec for rec in reversed(info.processes) if rec.name in INFRA]
    stopped = supervisor.stop_all(services, timeout)
    # What the services started and no longer hold as children (adopted after a restart).
    infra_pids = {rec.pid for rec in infra}
    strays = [
        proc
        for proc in supervisor.started_for(home.root, info.started_at)
        if proc.pid not in infra_pids
    ]
    if strays:
        terminate(strays, timeout)
        stopped.append(f"{len(strays)} more of its processes")
    stopped += supervisor.stop_all(infra, timeout)
    clear_state(home)
    return stopped


def restart(
    name: str, home: str | os.PathLike[str] | None = None, timeout: float = 60.0
) -> ProcessRecord:
    """Start one component of the running stack again, as `up` started it (stopping it
    first if it still runs): a service, or the embedded NATS or Postgres where their
    clients reconnect to."""
    nexus_home = resolve_home(home)
    with _locked(nexus_home):
        info = load_state(nexus_home)
        old = info.process(name) if info is not None else None
        if info is None or old is None:
            raise StackError(f"no {name!r} in the stack under {nexus_home.root} to restart")
        supervisor.stop(old)
        if name == "nats":
            record = start_nats(nexus_home, port=httpx.URL(old.url or "").port)
        elif name == "postgres":  # its socket lies in its data folder: the URL stays
            record = start_postgres(nexus_home).record
        else:
            record = _respawn_service(nexus_home, info, name, time.monotonic() + timeout)
        info.processes[info.processes.index(old)] = record
        save_state(nexus_home, info)
        return record


def _respawn_service(home: NexusHome, info: StackInfo, name: str, deadline: float) -> ProcessRecord:
    svc = next((s for s in SERVICES if s.name == name), None)
    if svc is None:
        raise StackError(f"unknown component {name!r}")
    record = _spawn_service(
        home, svc, _with_checkout_on_path({**os.environ, **info.env}), info.url(name)
    )
    failures = wait_ready({name: record}, {name: info.url(name)}, deadline)
    if failures:
        (failure,) = failures
        raise StackError(f"{name} is not ready: {failure.reason}; {failure.log}")
    return record


def stop_stack(home: str | os.PathLike[str] | None = None, timeout: float = 10.0) -> list[str]:
    """Stop every process the recorded `up` started (and only those); return their names."""
    nexus_home = resolve_home(home)
    with _locked(nexus_home):
        return _stop(nexus_home, timeout)
