"""Phase 5 of a workflow: register the validated model, roll it out, and report the outcome
through the project files, the workflow's memory keys and a phase event."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from services.deployer.bundle import (
    DEPLOY_SCRIPT,
    DEPLOYMENT_DOC,
    DOCKERFILE,
    SERVE_SCRIPT,
    bundle_values,
    docker_name,
    write_bundle,
)
from services.deployer.model_server.schemas import ENDPOINTS, MAX_ROWS
from services.deployer.models import Deployment, RegisteredModel
from services.deployer.process_manager import PortUnavailable
from services.deployer.repository import DeployerRepository
from services.deployer.rollout import Deployer
from shared.events import Phase4Passed, Phase5Completed, PhaseFailed
from shared.service_app import ServiceContext
from shared.spec import WorkflowSpec

logger = logging.getLogger(__name__)

CONSUMER = "deployer-phase4-passed"
MODEL_FILES = ("model.safetensors", "model-metadata.json")


def model_dir_uri(model_uri: str) -> str:
    """The folder of a saved model, whether the URI names it or one of its files."""
    uri = model_uri.rstrip("/")
    for name in MODEL_FILES:
        if uri.endswith(f"/{name}"):
            return uri[: -len(name) - 1]
    return uri


def _now() -> str:
    return datetime.now(UTC).isoformat()


class Phase5Announcer:
    """Files, memory keys and events of one workflow's rollout (see `rollout.Announcer`)."""

    def __init__(self, context: ServiceContext, event: Phase4Passed, spec: WorkflowSpec) -> None:
        self.context = context
        self.event = event
        self.spec = spec

    async def publish(
        self, deployment: Deployment, model: RegisteredModel, checks: dict[str, Any]
    ) -> None:
        tenant, workflow = self.event.tenant_id, str(self.event.workflow_id)
        artifacts = self.context.artifacts
        values = bundle_values(
            model, deployment, checks, deployer_url=self.context.settings.deployer_url
        )
        # The gate's third leg, docs present: write_bundle raises if DEPLOYMENT.md cannot be
        # written, and the smoke test has already seen the server's own /docs.
        urls = await asyncio.to_thread(write_bundle, artifacts, tenant, workflow, values)
        url = str(deployment.url)
        gates = {"api_answers": True, "health_passes": True, "docs_present": True}
        keys: dict[str, Any] = {
            "neural/deployment-ready": {
                "url": url,
                "deployment_id": str(deployment.id),
                "model_id": str(model.id),
                "model_name": model.name,
                "version": model.version,
                "pid": deployment.pid,
                "port": deployment.port,
                "status": "running",
            },
            "neural/dockerfile": {
                "uri": urls[DOCKERFILE],
                "image": f"{docker_name(model.name)}:v{model.version}",
                "base_image": "python:3.11-slim",
            },
            "neural/serve-api": {
                "url": url,
                "endpoints": {name: _endpoint(url, route) for name, route in ENDPOINTS.items()},
                "max_rows_per_request": MAX_ROWS,
                "example": checks["example"],
                "serve_script": urls[SERVE_SCRIPT],
                "docs": urls[DEPLOYMENT_DOC],
            },
            "neural/deploy-script": {
                "uri": urls[DEPLOY_SCRIPT],
                "serve_script": urls[SERVE_SCRIPT],
            },
            "neural/phase5-complete": {
                "completed_at": _now(),
                "gates": gates,
                "smoke_test": checks["predict"],
                "deployment_id": str(deployment.id),
            },
            "neural/workflow-complete": {
                "completed_at": _now(),
                "workflow_id": workflow,
                "name": model.name,
                "dataset": self.spec.dataset,
                "served_url": url,
                "model_id": str(model.id),
                "model_version": model.version,
                "deployment_id": str(deployment.id),
                "served_accuracy": checks["predict"]["accuracy"],
                "validation_metrics": self.event.metrics,
                "docs": urls[DEPLOYMENT_DOC],
            },
        }
        # Written in order: phase5-complete and workflow-complete last, once all else is there.
        await self.context.memory.put_many(tenant, workflow, keys)

    def completed(self, deployment: Deployment, model: RegisteredModel) -> Phase5Completed:
        return Phase5Completed(
            workflow_id=self.event.workflow_id,
            tenant_id=self.event.tenant_id,
            deployment_id=deployment.id,
            model_id=model.id,
            served_url=str(deployment.url),
        )

    def failed(
        self, deployment: Deployment | None, model: RegisteredModel | None, reason: str
    ) -> PhaseFailed:
        details: dict[str, Any] = {}
        if deployment is not None:
            details["deployment_id"] = str(deployment.id)
        if model is not None:
            details.update(model_id=str(model.id), model_version=model.version)
        return PhaseFailed(
            phase=5,
            reason=reason,
            details=details,
            workflow_id=self.event.workflow_id,
            tenant_id=self.event.tenant_id,
        )


def _endpoint(url: str, route: str) -> str:
    method, path = route.split(" ", 1)
    return f"{method} {url}{path}"


async def _deployable_spec(context: ServiceContext, event: Phase4Passed) -> WorkflowSpec | str:
    """The event's spec when it can be deployed; otherwise why it cannot."""
    try:
        spec = WorkflowSpec.model_validate(event.spec)
    except ValidationError as exc:
        return f"invalid workflow spec: {exc.errors(include_url=False)}"
    model_dir = model_dir_uri(event.model_uri)
    for name in MODEL_FILES:
        if not await asyncio.to_thread(context.artifacts.exists, f"{model_dir}/{name}"):
            return f"no {name} at {model_dir}"
    return spec


async def handle_phase4_passed(
    context: ServiceContext, deployer: Deployer, event: Phase4Passed
) -> None:
    """Register the model and roll it out; every failure becomes a PhaseFailed event."""
    async with context.unit_of_work() as uow:
        if not await uow.first_time(CONSUMER, event.event_id):
            return
        spec = await _deployable_spec(context, event)
        if isinstance(spec, str):
            await uow.emit(
                PhaseFailed(
                    phase=5,
                    reason=spec,
                    workflow_id=event.workflow_id,
                    tenant_id=event.tenant_id,
                )
            )
            return
        model = await DeployerRepository(uow.session, event.tenant_id).register_model(
            event.workflow_id,
            spec.name,
            model_dir_uri(event.model_uri),
            event.metrics,
            spec.model_dump(mode="json"),
        )
    logger.info("registered %s v%d for workflow %s", model.name, model.version, event.workflow_id)
    announcer = Phase5Announcer(context, event, spec)
    try:
        await deployer.deploy(event.tenant_id, model.id, announcer=announcer)
    except PortUnavailable as exc:
        async with context.unit_of_work() as uow:
            await uow.emit(announcer.failed(None, model, str(exc)))
