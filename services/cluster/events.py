"""NATS handlers of the cluster service: phase 1 from `workflow.requested`, node start-up and
registration (phase 2's node half), heartbeats, and every phase's status for the workflow."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from faststream.nats import NatsRouter
from pydantic import ValidationError

from services.cluster.cluster_repository import ClusterRepository
from services.cluster.cluster_service import (
    claim_nodes,
    fail_cluster,
    launch_nodes,
    record_registration,
    release_workflow_nodes,
)
from services.cluster.models import Workflow, WorkflowPhase
from services.cluster.runtime import create_runtime
from services.cluster.setup_phase import record_refused_workflow, set_up_workflow
from services.cluster.supervision import note_heartbeat
from services.cluster.workflow_repository import WorkflowRepository
from services.cluster.workflow_status import (
    complete_phase,
    fail_phase,
    record_progress,
    record_result,
)
from shared.bus import NODE_HEARTBEAT_SUBJECT, durable_subscriber
from shared.db import UnitOfWork
from shared.errors import Unauthorized, describe_validation_errors
from shared.events import (
    Event,
    NodeRegistered,
    Phase1Completed,
    Phase2Completed,
    Phase3Completed,
    Phase4Passed,
    Phase5Completed,
    PhaseFailed,
    TrainingProgress,
    WorkflowRequested,
)
from shared.service_app import ServiceContext
from shared.spec import WorkflowSpec

REPORT_PATH = "neural/reports/performance-report.md"
# Where a request whose token could not be verified is recorded (it proves no tenant).
UNVERIFIED_TENANT = "unverified"

Phases = dict[int, WorkflowPhase]
# (event, unit of work, workflow, phases) -> whether anything changed
StatusUpdate = Callable[[Any, UnitOfWork, Workflow, Phases], Awaitable[bool]]


def create_event_router(context: ServiceContext) -> NatsRouter:
    router = NatsRouter()
    runtime = create_runtime(context)

    @durable_subscriber(router, WorkflowRequested, "cluster-setup")
    async def on_workflow_requested(event: WorkflowRequested) -> None:
        async with context.unit_of_work() as uow:
            if not await uow.first_time("cluster-setup", event.event_id):
                return
            # Idempotent on the requester's workflow id too (it may publish twice).
            if await WorkflowRepository(uow.session, "").id_taken(event.workflow_id):
                return
            assert context.token_verifier is not None, "set by the app's lifespan"
            try:
                principal = await context.token_verifier.verify(
                    event.auth_token, event.tenant_id or None
                )
            except Unauthorized as exc:
                # The payload's tenant is not trusted without a valid token: keep the record
                # where no tenant can read it (operators can, with the internal token).
                reason = f"auth_token: {exc.detail}"
                await record_refused_workflow(
                    uow, UNVERIFIED_TENANT, event.workflow_id, event.spec, reason
                )
                return
            try:
                spec = WorkflowSpec.model_validate(event.spec)
            except ValidationError as exc:
                problems = describe_validation_errors([dict(e) for e in exc.errors()])
                reason = "invalid spec: " + "; ".join(
                    f"{p['field']}: {p['message']}" for p in problems
                )
                await record_refused_workflow(
                    uow, principal.tenant_id, event.workflow_id, event.spec, reason
                )
                return
            await set_up_workflow(
                uow, context.memory, context.artifacts, principal.tenant_id, spec, event.workflow_id
            )

    @durable_subscriber(router, Phase1Completed, "cluster-nodes")
    async def on_phase1_completed(event: Phase1Completed) -> None:
        async with context.unit_of_work() as uow:
            if not await uow.first_time("cluster-nodes", event.event_id):
                return
            cluster = await ClusterRepository(uow.session).get(
                event.cluster_id, event.tenant_id, for_update=True
            )
            if cluster is None or cluster.status != "starting" or cluster.owner is not None:
                return
            age = (datetime.now(UTC) - event.occurred_at).total_seconds()
            if age > runtime.settings.node_start_max_age_s:
                reason = f"nodes were not started within {age:.0f} s of phase 1 (service down?)"
                await fail_cluster(context, uow, cluster, reason)
                return
            plans = await claim_nodes(context, uow, cluster)
        await launch_nodes(context, cluster, plans)

    @durable_subscriber(router, NodeRegistered, "cluster-node-registered")
    async def on_node_registered(event: NodeRegistered) -> None:
        await record_registration(context, event)

    @router.subscriber(NODE_HEARTBEAT_SUBJECT.format(cluster_id="*", node_id="*"))
    async def on_heartbeat(body: dict[str, Any]) -> None:
        note_heartbeat(runtime, body)

    def status(event_type: type[Event], consumer: str, subject: str | None = None) -> Any:
        """Register `update` as a durable, idempotent consumer of `event_type` that gets the
        event's workflow (locked) and its phases; unknown workflows are acknowledged and
        skipped."""

        def register(update: StatusUpdate) -> StatusUpdate:
            async def handle(event: Event) -> None:
                await _apply_status(context, consumer, event, update)

            # FastStream parses the message into the annotated model.
            handle.__annotations__ = {"event": event_type, "return": None}
            durable_subscriber(router, event_type, consumer, subject=subject)(handle)
            return update

        return register

    @status(Phase2Completed, "cluster-status-phase2")
    async def on_phase2(event: Phase2Completed, uow: UnitOfWork, wf: Workflow, ph: Phases) -> bool:
        detail = {"architecture": event.architecture, "nodes": len(event.nodes)}
        return complete_phase(wf, ph, 2, detail)

    @status(Phase3Completed, "cluster-status-phase3")
    async def on_phase3(event: Phase3Completed, uow: UnitOfWork, wf: Workflow, ph: Phases) -> bool:
        detail = {"job_id": str(event.job_id), "metrics": _scalars(event.metrics)}
        return complete_phase(wf, ph, 3, detail)

    @status(Phase4Passed, "cluster-status-phase4")
    async def on_phase4(event: Phase4Passed, uow: UnitOfWork, wf: Workflow, ph: Phases) -> bool:
        detail = {"validation_id": str(event.validation_id), "metrics": _scalars(event.metrics)}
        report_uri = context.artifacts.workflow_url(wf.tenant_id, wf.id, REPORT_PATH)
        test_accuracy = event.metrics.get("test_accuracy")
        # Recorded even if phase 5's event was handled first.
        record_result(wf, {"report_uri": report_uri, "test_accuracy": test_accuracy})
        return complete_phase(wf, ph, 4, detail)

    @status(Phase5Completed, "cluster-status-phase5")
    async def on_phase5(event: Phase5Completed, uow: UnitOfWork, wf: Workflow, ph: Phases) -> bool:
        detail = {"deployment_id": str(event.deployment_id), "served_url": event.served_url}
        report_uri = context.artifacts.workflow_url(wf.tenant_id, wf.id, REPORT_PATH)
        values = {"served_url": event.served_url, "model_id": str(event.model_id)}
        record_result(wf, {**values, "report_uri": report_uri})
        changed = complete_phase(wf, ph, 5, detail)
        await release_workflow_nodes(context, uow, wf.id)
        return changed

    @status(TrainingProgress, "cluster-status-progress")
    async def on_progress(
        event: TrainingProgress, uow: UnitOfWork, wf: Workflow, ph: Phases
    ) -> bool:
        progress = {
            "epoch": event.epoch,
            "epochs": event.epochs,
            "train_loss": event.train_loss,
            "val_accuracy": event.val_accuracy,
        }
        return record_progress(wf, ph, progress)

    async def on_failed(event: PhaseFailed, uow: UnitOfWork, wf: Workflow, ph: Phases) -> bool:
        failed = fail_phase(wf, ph, event.phase, event.reason)
        await release_workflow_nodes(context, uow, wf.id)
        return failed

    # One durable consumer per phase's failure subject: a wildcard could catch other events.
    for phase in range(1, 6):
        status(PhaseFailed, f"cluster-status-phase{phase}-failed", f"nexus.phase{phase}.failed")(
            on_failed
        )

    return router


async def _apply_status(
    context: ServiceContext, consumer: str, event: Event, update: StatusUpdate
) -> None:
    async with context.unit_of_work() as uow:
        if not await uow.first_time(consumer, event.event_id):
            return
        workflows = WorkflowRepository(uow.session, event.tenant_id)
        workflow = await workflows.get(event.workflow_id, for_update=True)
        if workflow is None:
            return  # not ours (or another tenant's claim): nothing to update
        await update(event, uow, workflow, await workflows.phases_of(workflow.id))


def _scalars(values: dict[str, Any]) -> dict[str, Any]:
    """The plain figures of a metrics dict, for a phase's detail (histories stay in memory)."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}
