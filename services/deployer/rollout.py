"""Rolling out, rolling back, stopping and restoring model servers: the deployer's second
boundary besides its routes and handlers. It owns its transactions, several short ones per
rollout, because a model server starts between them and each state must be visible while it
does; the domain pieces it uses (registration, bundle, smoke test) live in `service/`.

Every change to the deployments of one model name runs under a lock per (tenant, name), so a
phase 5 rollout, an API redeploy and a rollback never interleave. Slow work (starting a
server, waiting for it, smoke testing) happens outside any database transaction: the row is
committed as `starting` first and updated with the outcome afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from services.deployer.models import Deployment, RegisteredModel
from services.deployer.process_manager import (
    ModelProcess,
    ModelProcessManager,
    ModelServerFailed,
    PortUnavailable,
    model_fork_launcher,
    model_server_environment,
)
from services.deployer.repository import DeployerRepository, deployments_to_restore
from services.deployer.service.capacity import check_room
from services.deployer.service.smoke import (
    QualityGate,
    SmokeTestFailed,
    held_out_rows,
    smoke_test,
)
from services.deployer.settings import DeployerSettings
from shared.contracts import Event
from shared.db import SYSTEM, Scope
from shared.errors import Conflict, NexusError, NotFound
from shared.security import internal_headers
from shared.service_app import AnyContext
from shared.spec import WorkflowSpec
from shared.telemetry import step

logger = logging.getLogger(__name__)

# The error of a deployment whose rollout ended with the deployer that ran it.
INTERRUPTED = "interrupted: the deployer stopped during this rollout"

_EXPECTED_FAILURES = (ModelServerFailed, SmokeTestFailed, PortUnavailable)
_MAX_ERROR_CHARS = 4000


class RollbackFailed(NexusError):
    status_code = 502
    error = "rollback_failed"


class Announcer(Protocol):
    """What a phase 5 rollout adds to a plain one: the project files, memory keys, events."""

    async def publish(
        self, deployment: Deployment, model: RegisteredModel, checks: dict[str, Any]
    ) -> Event:
        """Write the project's files; the memory keys to emit with the completion."""

    def completed(self, deployment: Deployment, model: RegisteredModel) -> Event: ...

    def failed(
        self, deployment: Deployment | None, model: RegisteredModel, reason: str
    ) -> Event: ...


@dataclass(frozen=True)
class Outcome:
    deployment: Deployment
    model: RegisteredModel
    succeeded: bool
    reason: str | None = None


def verifying_env(settings: DeployerSettings) -> dict[str, str]:
    """How a model server checks credentials as the services do: the auth service that
    issued them, and the internal token the deployer's own checks send."""
    env = {"NEXUS_AUTH_URL": settings.auth_url}
    token = settings.internal_token_or_none()
    if token:
        env["NEXUS_INTERNAL_TOKEN"] = token
    return env


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, _EXPECTED_FAILURES):
        return str(exc)[:_MAX_ERROR_CHARS]
    logger.error("unexpected rollout failure", exc_info=exc)
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_CHARS]


class Deployer:
    """The deployer's process manager and rollout logic, one per service process."""

    def __init__(self, context: AnyContext, settings: DeployerSettings) -> None:
        self.context = context
        self.settings = settings
        logs = settings.home / "logs" / "models"
        launcher = None
        if settings.model_server_start == "fork":
            launcher = model_fork_launcher(model_server_environment(), logs)
        self.processes = ModelProcessManager(
            settings.model_host,
            range(settings.model_port_start, settings.model_port_end + 1),
            logs,
            launcher,
            settings.model_bind_host,
            verifying_env(settings),
        )
        # Model servers are local: never route them through an environment proxy.
        self.http = httpx.AsyncClient(timeout=30.0, trust_env=False)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def close(self) -> None:
        await self.processes.stop_all(self.settings.model_stop_timeout_s)
        if self.processes.launcher is not None:
            await asyncio.to_thread(self.processes.launcher.stop)
        await self.http.aclose()

    def _lock(self, tenant_id: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((tenant_id, name), asyncio.Lock())

    # --- reading ------------------------------------------------------------------------------
    async def _model(self, tenant_id: str, model_id: uuid.UUID) -> RegisteredModel:
        async with self.context.unit_of_work() as uow:
            model = await DeployerRepository(uow.session, tenant_id).get_model(model_id)
        if model is None:
            raise NotFound(f"no model {model_id}")
        return model

    async def lookup(
        self, tenant_id: str, deployment_id: uuid.UUID
    ) -> tuple[Deployment, RegisteredModel]:
        """A deployment of the tenant and its model; NotFound otherwise."""
        async with self.context.unit_of_work() as uow:
            repo = DeployerRepository(uow.session, tenant_id)
            deployment = await repo.get_deployment(deployment_id)
            model = await repo.get_model(deployment.model_id) if deployment else None
        if deployment is None or model is None:
            raise NotFound(f"no deployment {deployment_id}")
        return deployment, model

    async def _update(
        self,
        tenant_id: str,
        deployment_id: uuid.UUID,
        *,
        events: tuple[Event, ...] = (),
        **changes: Any,
    ) -> Deployment:
        async with self.context.unit_of_work() as uow:
            repo = DeployerRepository(uow.session, tenant_id)
            deployment = await repo.update_deployment(deployment_id, **changes)
            for event in events:
                await uow.emit(event)
        return deployment

    # --- starting and checking a server -------------------------------------------------------
    async def _launch(
        self, deployment_id: uuid.UUID, model: RegisteredModel, port: int
    ) -> ModelProcess:
        # Saves a process start (seconds) and says plainly why, when the files are gone.
        metadata = f"{model.model_uri.rstrip('/')}/model-metadata.json"
        if not await asyncio.to_thread(self.context.artifacts.exists, metadata):
            raise ModelServerFailed(f"no model files at {model.model_uri}")
        # In a thread: a fork server that stopped answering may take seconds to give up on.
        start = self.settings.model_server_start
        deploy = WorkflowSpec.model_validate(model.spec).deploy
        with step("start model server", port=port, start=start):
            process = await asyncio.to_thread(
                functools.partial(
                    self.processes.start,
                    deployment_id,
                    model.model_uri,
                    port,
                    model_id=model.id,
                    name=model.name,
                    version=model.version,
                    tenant_id=None if deploy.public else model.tenant_id,
                    batching=deploy.batching,
                    precision=deploy.precision,
                )
            )
        try:
            with step("wait for model server ready", port=port):
                timeout_s = self.settings.model_ready_timeout_s
                await self.processes.wait_ready(process, self.http, timeout_s)
        except BaseException:
            await self.processes.stop(deployment_id, self.settings.model_stop_timeout_s)
            raise
        return process

    async def _smoke(self, url: str, model: RegisteredModel) -> dict[str, Any]:
        spec = WorkflowSpec.model_validate(model.spec)
        rows = await asyncio.to_thread(
            held_out_rows, spec.dataset, spec.training.seed, self.settings.smoke_rows
        )
        gates = spec.gates
        gate = QualityGate(
            gates.min_accuracy, gates.min_r2, gates.max_rmse, gates.max_p99_latency_ms
        )
        # As a service acting for the model's tenant; None: a public model, asked as anyone.
        token = self.settings.internal_token_or_none() or ""
        credentials = None if spec.deploy.public else internal_headers(token, model.tenant_id)
        with step("smoke test", rows=len(rows.rows)):
            return await smoke_test(self.http, url, rows, gate, credentials)

    # --- rollout ------------------------------------------------------------------------------
    async def deploy(
        self,
        tenant_id: str,
        model_id: uuid.UUID,
        *,
        port: int | None = None,
        announcer: Announcer | None = None,
    ) -> Outcome:
        """Start a server for a registered model, smoke test it, and on success retire the
        model name's previous deployment; on failure that one keeps serving. Raises
        PortUnavailable (before anything is stored) when the requested port is taken."""
        model = await self._model(tenant_id, model_id)
        requested = port or WorkflowSpec.model_validate(model.spec).deploy.port
        async with self._lock(tenant_id, model.name):
            return await self._deploy_locked(tenant_id, model, requested, announcer)

    async def _deploy_locked(
        self,
        tenant_id: str,
        model: RegisteredModel,
        requested: int | None,
        announcer: Announcer | None,
    ) -> Outcome:
        async with self.context.unit_of_work() as uow:
            repo = DeployerRepository(uow.session, tenant_id)
            previous = await repo.running_deployment_of(model.name)
            # A fixed port the previous version holds: replace in place, restore it on failure.
            in_place = previous is not None and requested is not None and previous.port == requested
            await check_room(
                self.settings,
                uow.session,
                tenant_id,
                servers_held=self.processes.servers_held,
                replacing=previous is not None,
            )
            port = requested if in_place else self.processes.reserve_port(requested)
            assert port is not None
            deployment = await repo.create_deployment(
                model, port, self.processes.url(port), previous.id if previous else None
            )
        try:
            if in_place and previous is not None:
                await self.processes.stop(previous.id, self.settings.model_stop_timeout_s)
                self.processes.reserve_port(port)
            process = await self._launch(deployment.id, model, port)
            deployment = await self._update(tenant_id, deployment.id, pid=process.pid)
            checks = await self._smoke(self.processes.url(port), model)
            announced = await announcer.publish(deployment, model, checks) if announcer else None
        except Exception as exc:
            reason = failure_reason(exc)
            await self.processes.stop(deployment.id, self.settings.model_stop_timeout_s)
            self.processes.release_port(port)
            if in_place and previous is not None:
                await self._bring_back(tenant_id, previous, port)
            failed = await self._update(
                tenant_id,
                deployment.id,
                status="failed",
                pid=None,
                error=reason,
                events=(announcer.failed(deployment, model, reason),) if announcer else (),
            )
            logger.warning("deployment %s of %s failed: %s", deployment.id, model.name, reason)
            return Outcome(failed, model, succeeded=False, reason=reason)

        if previous is not None and not in_place:
            await self.processes.stop(previous.id, self.settings.model_stop_timeout_s)
        if previous is not None:
            await self._update(tenant_id, previous.id, status="stopped", pid=None)
        running = await self._update(
            tenant_id,
            deployment.id,
            status="running",
            checks=checks,
            error=None,
            events=(announced, announcer.completed(deployment, model))
            if announcer and announced
            else (),
        )
        logger.info("deployed %s v%d at %s", model.name, model.version, running.url)
        return Outcome(running, model, succeeded=True)

    async def _bring_back(self, tenant_id: str, previous: Deployment, port: int) -> None:
        """Restart a deployment whose port a failed replacement had taken over."""
        _, model = await self.lookup(tenant_id, previous.id)
        try:
            self.processes.reserve_port(port)
            process = await self._launch(previous.id, model, port)
        except Exception as exc:
            self.processes.release_port(port)
            await self._update(
                tenant_id, previous.id, status="failed", pid=None, error=failure_reason(exc)
            )
            return
        await self._update(tenant_id, previous.id, pid=process.pid)

    # --- rollback and stop --------------------------------------------------------------------
    async def rollback(self, tenant_id: str, deployment_id: uuid.UUID) -> Deployment:
        """Stop a running deployment and serve its predecessor again, on the same port so
        clients keep their URL. If the predecessor fails its checks, the current one is
        started again and RollbackFailed is raised."""
        _, model = await self.lookup(tenant_id, deployment_id)
        async with self._lock(tenant_id, model.name):
            current, model = await self.lookup(tenant_id, deployment_id)
            if current.status != "running":
                raise Conflict(f"deployment is {current.status}; only a running one rolls back")
            if current.previous_deployment_id is None:
                raise Conflict(f"no earlier deployment of {model.name!r} to roll back to")
            previous, previous_model = await self.lookup(tenant_id, current.previous_deployment_id)
            assert current.port is not None, "a running deployment has a port"
            await self.processes.stop(current.id, self.settings.model_stop_timeout_s)
            port = self._reserve_preferring(current.port)
            try:
                process = await self._launch(previous.id, previous_model, port)
                checks = await self._smoke(self.processes.url(port), previous_model)
            except Exception as exc:
                reason = failure_reason(exc)
                await self.processes.stop(previous.id, self.settings.model_stop_timeout_s)
                self.processes.release_port(port)
                await self._bring_back(tenant_id, current, current.port)
                raise RollbackFailed({"deployment_id": str(previous.id), "reason": reason}) from exc
            await self._update(tenant_id, current.id, status="rolled_back", pid=None)
            return await self._update(
                tenant_id,
                previous.id,
                status="running",
                port=port,
                url=self.processes.url(port),
                pid=process.pid,
                checks=checks,
                error=None,
            )

    async def stop(self, tenant_id: str, deployment_id: uuid.UUID) -> Deployment:
        _, model = await self.lookup(tenant_id, deployment_id)
        async with self._lock(tenant_id, model.name):
            deployment, _ = await self.lookup(tenant_id, deployment_id)
            if deployment.status != "running":
                raise Conflict(f"deployment is {deployment.status}, not running")
            await self.processes.stop(deployment.id, self.settings.model_stop_timeout_s)
            return await self._update(tenant_id, deployment.id, status="stopped", pid=None)

    def _reserve_preferring(self, port: int) -> int:
        try:
            return self.processes.reserve_port(port)
        except PortUnavailable:
            return self.processes.reserve_port(None)

    async def unfinished_rollout(self, tenant_id: str, workflow_id: uuid.UUID) -> uuid.UUID | None:
        """The model phase 5 of `workflow_id` registered, when a deployer that died cut its
        rollout short (no deployment made yet, or only one left `starting` or marked
        interrupted): that one is marked interrupted, and the model is to be rolled out
        again. None when there is nothing to resume: no such model, or its rollout ended."""
        async with self.context.sessionmaker() as session:
            repo = DeployerRepository(session, tenant_id)
            model = await repo.model_of_workflow(workflow_id)
            if model is None:
                return None
        # A rollout of the model in flight in this process holds this lock throughout.
        async with self._lock(tenant_id, model.name):
            async with self.context.sessionmaker() as session:
                deployments = await DeployerRepository(session, tenant_id).list_deployments(
                    None, model.id, 100
                )
            if any(d.status != "starting" and d.error != INTERRUPTED for d in deployments):
                return None
            for deployment in deployments:
                if deployment.status == "starting":
                    await self._restore_one(deployment, model)
        logger.warning("resuming the rollout of %s v%d cut short", model.name, model.version)
        return model.id

    # --- start-up -----------------------------------------------------------------------------
    async def restore(self, scope: Scope = SYSTEM) -> dict[str, str]:
        """Bring back what was live when the deployer last stopped: adopt a server still
        running, restart one that is gone, and mark rollouts cut short as failed.
        Returns each deployment's fate (`adopted`, `restarted`, `failed`, `interrupted`)."""
        async with self.context.sessionmaker() as session:
            rows = await deployments_to_restore(session, scope)
        fates: dict[str, str] = {}
        for deployment, model in rows:
            async with self._lock(deployment.tenant_id, model.name):
                fates[str(deployment.id)] = await self._restore_one(deployment, model)
        if fates:
            logger.info("restored deployments: %s", fates)
        return fates

    async def _restore_one(self, deployment: Deployment, model: RegisteredModel) -> str:
        tenant_id = deployment.tenant_id
        if self.processes.is_running(deployment.id):
            return "running"
        pid, port = deployment.pid, deployment.port
        if deployment.status == "starting":
            if pid and port and self.processes.adopt(deployment.id, pid, port):
                await self.processes.stop(deployment.id, self.settings.model_stop_timeout_s)
            await self._update(
                tenant_id, deployment.id, status="failed", pid=None, error=INTERRUPTED
            )
            return "interrupted"
        if pid and port and self.processes.adopt(deployment.id, pid, port):
            return "adopted"
        reserved: int | None = None
        try:
            reserved = self._reserve_preferring(port or self.settings.model_port_start)
            process = await self._launch(deployment.id, model, reserved)
        except Exception as exc:
            self.processes.release_port(reserved)
            error = f"could not be restarted: {failure_reason(exc)}"
            await self._update(tenant_id, deployment.id, status="failed", pid=None, error=error)
            return "failed"
        await self._update(
            tenant_id,
            deployment.id,
            pid=process.pid,
            port=reserved,
            url=self.processes.url(reserved),
        )
        return "restarted"
