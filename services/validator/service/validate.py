"""Phase 4, start: create a validation and hand it to the cluster's validator node.

The validation row is committed before the task goes out, so the node's report always finds
it; the task request happens outside any transaction (it may wait seconds)."""

from __future__ import annotations

import logging
import uuid

from services.validator.models import Validation
from services.validator.repository import ValidationRepository
from services.validator.service.nodes import NodeUnavailable, ValidatorNode, find_validator
from services.validator.state import ValidatorContext
from shared.contracts import NodeLost, Phase3Completed, PhaseFailed, ValidateTask
from shared.db import SYSTEM, UnitOfWork
from shared.node_tasks import TaskNotStarted, send_node_task
from shared.phases import fail_phase
from shared.spec import TEST_FRACTION, VAL_FRACTION, WorkflowSpec

logger = logging.getLogger(__name__)

PHASE = 4


async def create_for_phase(uow: UnitOfWork, event: Phase3Completed) -> Validation:
    return await ValidationRepository(uow.session, event.tenant_id).create(
        workflow_id=event.workflow_id,
        cluster_id=event.cluster_id,
        trigger="phase",
        model_uri=event.model_uri,
        spec=event.spec.model_dump(mode="json"),
        gates=event.spec.gates.model_dump(mode="json"),
    )


def validate_task(context: ValidatorContext, validation: Validation) -> ValidateTask:
    """What the validator node needs: the model, the split training used, and the knobs."""
    spec = WorkflowSpec.model_validate(validation.spec)
    return ValidateTask(
        validation_id=validation.id,
        workflow_id=validation.workflow_id,
        tenant_id=validation.tenant_id,
        model_uri=validation.model_uri,
        dataset=spec.dataset,
        seed=spec.training.seed,
        val_fraction=VAL_FRACTION,
        test_fraction=TEST_FRACTION,
        shards=context.settings.inference_shards,
        latency_repeats=context.settings.latency_repeats,
    )


async def send_validate_task(
    context: ValidatorContext,
    validation: Validation,
    node: ValidatorNode | None = None,
    exclude: frozenset[str] = frozenset(),
) -> tuple[str | None, str | None]:
    """Hand the committed validation to a node (the cluster's validator, unless given; never
    one of `exclude`): (node id, None) once accepted, else (node id or None, why not)."""
    node_id = node.node_id if node else None
    try:
        if node is None:
            node = await find_validator(
                context, validation.tenant_id, validation.cluster_id, exclude
            )
            node_id = node.node_id
        task = validate_task(context, validation).model_dump(mode="json")
        deadline = context.settings.validation_task_deadline_s
        await send_node_task(context, node.node_id, str(validation.id), "validate", task, deadline)
    except (NodeUnavailable, TaskNotStarted) as exc:
        return node_id, str(exc)
    logger.info("validation %s accepted by node %s", validation.id, node_id)
    return node_id, None


async def record_dispatch(
    uow: UnitOfWork, validation_id: uuid.UUID, node_id: str | None, error: str | None
) -> None:
    """Running once accepted; otherwise the validation ends in error and, for phase 4's own
    validation, the phase fails: without a validator node there is nothing to wait for."""
    current = await ValidationRepository(uow.session, SYSTEM).get(validation_id, for_update=True)
    # A fast node may already have reported; then its outcome stands.
    if current is None or current.status != "queued":
        return
    current.node_id = node_id
    if error is None:
        current.status = "running"
        return
    logger.warning("validation %s could not start: %s", validation_id, error)
    await ValidationRepository(uow.session, current.tenant_id).finish(current, "error", error=error)
    if current.trigger == "phase":
        await fail_validation(uow, current, f"validation could not start: {error}")


async def reopen_validations_on_lost_node(uow: UnitOfWork, event: NodeLost) -> list[Validation]:
    """The node measuring a model is gone and its report will never come: its validations
    are queued again, to be handed to another node once this unit commits."""
    repository = ValidationRepository(uow.session, event.tenant_id)
    reopened = []
    for validation in await repository.open_on_node(event.cluster_id, event.node_id):
        logger.warning(
            "validation %s: node %s was lost (%s); handing it to another node",
            validation.id,
            event.node_id,
            event.reason,
        )
        validation.status, validation.node_id = "queued", None
        reopened.append(validation)
    await uow.session.flush()
    return reopened


async def redispatch(context: ValidatorContext, validation: Validation, lost: NodeLost) -> None:
    """Run a reopened validation on another live node of the cluster; without one, it ends
    in error and phase 4 fails, naming the lost node."""
    node_id, error = await send_validate_task(
        context, validation, exclude=frozenset({lost.node_id})
    )
    if error is not None:
        error = (
            f"node {lost.node_id} was lost during validation: {lost.reason}; no other node "
            f"could take it over: {error}"
        )
    async with context.unit_of_work() as uow:
        await record_dispatch(uow, validation.id, node_id, error)


async def close_validations_of_failed_phase(uow: UnitOfWork, event: PhaseFailed) -> None:
    """Phase 4 failed elsewhere (its deadline passed): a validation still open ends in error
    with that reason, so it is not reported later for a workflow that has ended."""
    repository = ValidationRepository(uow.session, event.tenant_id)
    for validation in await repository.open_of_workflow(event.workflow_id):
        logger.warning("validation %s: %s", validation.id, event.reason)
        await repository.finish(validation, "error", error=event.reason)


async def fail_validation(
    uow: UnitOfWork, validation: Validation, reason: str, details: dict[str, object] | None = None
) -> None:
    """Phase 4 failed: the one way the validator reports it."""
    await fail_phase(
        uow,
        PHASE,
        validation.workflow_id,
        validation.tenant_id,
        reason,
        {"validation_id": str(validation.id), **(details or {})},
    )
