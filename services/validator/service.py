"""Phase 4: start a validation on a validator node, and conclude it when the node reports.

Starting commits the validation row before the task goes out, so the node's report always
finds it; the task request happens outside any transaction (it may wait seconds).
"""

from __future__ import annotations

import logging
from typing import Any

from services.validator.dispatch import NodeUnavailable, ValidatorNode, find_validator, send_task
from services.validator.models import Validation
from services.validator.repository import ValidationRepository
from services.validator.settings import ValidatorSettings
from shared.events import NodeInfo, PhaseFailed
from shared.service_app import ServiceContext
from shared.spec import WorkflowSpec

logger = logging.getLogger(__name__)

PHASE = 4


def validator_settings(context: ServiceContext) -> ValidatorSettings:
    settings = context.settings
    assert isinstance(settings, ValidatorSettings), "the validator runs with its own settings"
    return settings


def task_payload(context: ServiceContext, validation: Validation) -> dict[str, Any]:
    """What the validator node needs: the model, the split training used, and the knobs."""
    spec = WorkflowSpec(**validation.spec)
    settings = validator_settings(context)
    return {
        "validation_id": str(validation.id),
        "workflow_id": str(validation.workflow_id),
        "tenant_id": validation.tenant_id,
        "model_uri": validation.model_uri,
        "dataset": spec.dataset,
        "seed": spec.training.seed,
        "shards": settings.inference_shards,
        "latency_repeats": settings.latency_repeats,
    }


async def launch(
    context: ServiceContext,
    validation: Validation,
    nodes_hint: list[NodeInfo] | None = None,
    node: ValidatorNode | None = None,
) -> str | None:
    """Hand the committed validation to a validator node; None when accepted, else why not.

    A refusal marks the validation `error` and, for phase 4's own validation, fails the
    phase: without a validator node there is nothing to wait for.
    """
    error: str | None = None
    node_id: str | None = None
    try:
        if node is None:
            node = await find_validator(
                context, validation.tenant_id, validation.cluster_id, nodes_hint
            )
        node_id = node.node_id
        await send_task(
            context,
            node,
            validation.id,
            task_payload(context, validation),
            validator_settings(context).task_accept_timeout_s,
        )
    except NodeUnavailable as exc:
        error = str(exc)
    async with context.unit_of_work() as uow:
        repository = ValidationRepository(uow.session, None)
        current = await repository.get(validation.id, for_update=True)
        # A fast node may already have reported; then its outcome stands.
        if current is None or current.status != "queued":
            return None
        current.node_id = node_id
        if error is None:
            current.status = "running"
            return None
        await repository.finish(current, "error", error=error)
        if current.trigger == "phase":
            await uow.emit(phase_failed(current, f"validation could not start: {error}"))
    logger.warning("validation %s could not start: %s", validation.id, error)
    return error


def phase_failed(
    validation: Validation, reason: str, details: dict[str, Any] | None = None
) -> PhaseFailed:
    return PhaseFailed(
        phase=PHASE,
        reason=reason,
        details={"validation_id": str(validation.id), **(details or {})},
        workflow_id=validation.workflow_id,
        tenant_id=validation.tenant_id,
    )


def gates_of(spec: dict[str, Any]) -> tuple[WorkflowSpec, dict[str, Any]]:
    """The parsed spec and its gates as stored on the validation (raises on a bad spec)."""
    parsed = WorkflowSpec(**spec)
    return parsed, parsed.gates.model_dump(mode="json")
