"""Phase 5 of a workflow: register the validated model, roll it out, and report the outcome
through the project files, the workflow's memory keys and a phase event."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from services.deployer.model_server.schemas import ENDPOINTS, MAX_ROWS
from services.deployer.models import Deployment, RegisteredModel
from services.deployer.repository import DeployerRepository
from services.deployer.service.bundle import (
    DEPLOY_SCRIPT,
    DEPLOYMENT_DOC,
    DOCKERFILE,
    SERVE_SCRIPT,
    bundle_values,
    docker_name,
    write_bundle,
)
from shared.contracts import MemoryWritten, Phase4Passed, Phase5Completed, PhaseFailed
from shared.db import UnitOfWork
from shared.ml.files import MODEL_FILES
from shared.phases import PhaseError, phase_failed
from shared.project_layout import MemoryKey
from shared.service_app import AnyContext

logger = logging.getLogger(__name__)

CONSUMER = "deployer-phase4-passed"


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

    def __init__(self, context: AnyContext, event: Phase4Passed) -> None:
        self.context = context
        self.event = event

    async def publish(
        self, deployment: Deployment, model: RegisteredModel, checks: dict[str, Any]
    ) -> MemoryWritten:
        tenant, workflow = self.event.tenant_id, str(self.event.workflow_id)
        artifacts = self.context.artifacts
        values = bundle_values(
            model, deployment, checks, deployer_url=self.context.settings.deployer_url
        )
        urls = await asyncio.to_thread(write_bundle, artifacts, tenant, workflow, values)
        url = str(deployment.url)
        # Phase 5's gate as the smoke test measured it (it raised on the first failure).
        gates = {
            "api_answers": checks["predict"]["rows"] > 0,
            "health_passes": checks["health"] == "ok" and checks["ready"] == "ok",
            "docs_present": checks["docs"] == "ok"
            and await asyncio.to_thread(artifacts.exists, urls[DEPLOYMENT_DOC]),
        }
        keys: dict[str, Any] = {
            MemoryKey.DEPLOYMENT_READY: {
                "url": url,
                "deployment_id": str(deployment.id),
                "model_id": str(model.id),
                "model_name": model.name,
                "version": model.version,
                "pid": deployment.pid,
                "port": deployment.port,
                "status": "running",
            },
            MemoryKey.DOCKERFILE: {
                "uri": urls[DOCKERFILE],
                "image": f"{docker_name(model.name)}:v{model.version}",
                "base_image": "python:3.11-slim",
            },
            MemoryKey.SERVE_API: {
                "url": url,
                "endpoints": {name: _endpoint(url, route) for name, route in ENDPOINTS.items()},
                "max_rows_per_request": MAX_ROWS,
                "example": checks["example"],
                "serve_script": urls[SERVE_SCRIPT],
                "docs": urls[DEPLOYMENT_DOC],
            },
            MemoryKey.DEPLOY_SCRIPT: {
                "uri": urls[DEPLOY_SCRIPT],
                "serve_script": urls[SERVE_SCRIPT],
            },
            MemoryKey.PHASE5_COMPLETE: {
                "completed_at": _now(),
                "gates": gates,
                "smoke_test": checks["predict"],
                "deployment_id": str(deployment.id),
            },
            MemoryKey.WORKFLOW_COMPLETE: {
                "completed_at": _now(),
                "workflow_id": workflow,
                "name": model.name,
                "dataset": self.event.spec.dataset,
                "served_url": url,
                "model_id": str(model.id),
                "model_version": model.version,
                "deployment_id": str(deployment.id),
                # A classifier's served accuracy, or a regression model's served R².
                **(
                    {"served_r2": checks["predict"]["r2"]}
                    if checks.get("task") == "regression"
                    else {"served_accuracy": checks["predict"]["accuracy"]}
                ),
                "validation_metrics": self.event.metrics,
                "docs": urls[DEPLOYMENT_DOC],
            },
        }
        # Stored in order: phase5-complete and workflow-complete last, once all else is there.
        return MemoryWritten(workflow_id=self.event.workflow_id, tenant_id=tenant, keys=keys)

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
        return phase_failed(5, self.event.workflow_id, self.event.tenant_id, reason, details)


def _endpoint(url: str, route: str) -> str:
    method, path = route.split(" ", 1)
    return f"{method} {url}{path}"


async def register_model(context: AnyContext, uow: UnitOfWork, event: Phase4Passed) -> uuid.UUID:
    """Phase 5's first step: the validated model in the registry (its files must be there)."""
    model_dir = model_dir_uri(event.model_uri)
    for name in MODEL_FILES:
        if not await asyncio.to_thread(context.artifacts.exists, f"{model_dir}/{name}"):
            raise PhaseError(f"no {name} at {model_dir}")
    model = await DeployerRepository(uow.session, event.tenant_id).register_model(
        event.workflow_id,
        event.spec.name,
        model_dir,
        event.metrics,
        event.spec.model_dump(mode="json"),
    )
    logger.info("registered %s v%d for workflow %s", model.name, model.version, event.workflow_id)
    return model.id
