"""NATS handlers of the cluster service. Each owns its transaction and calls `service/`:
phase 1 from `workflow.requested`, starting a workflow's nodes, their registrations and
heartbeats, and every phase's events into the workflow's record."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from faststream.nats import NatsRouter
from pydantic import ValidationError

from services.cluster.background import launch, verify_cluster
from services.cluster.models import Workflow, WorkflowPhase
from services.cluster.repository import ClusterRepository, WorkflowRepository
from services.cluster.service import adoption, nodes
from services.cluster.service.admission import admit_or_queue, check_quotas
from services.cluster.service.datasets import resolve_dataset
from services.cluster.service.deadlines import DeadlinePolicy, extend_for_epoch, stamp_deadlines
from services.cluster.service.setup import record_refused_workflow, set_up_workflow
from services.cluster.service.status import (
    record_phase_completed,
    record_phase_failed,
    record_progress,
    record_result,
)
from services.cluster.service.supervision import note_heartbeat
from services.cluster.state import ClusterContext
from shared.bus import NODE_HEARTBEAT_SUBJECT, durable_subscriber
from shared.contracts import (
    Event,
    EventDeadLettered,
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
from shared.db import SYSTEM, UnitOfWork
from shared.errors import (
    TooManyRequests,
    Unauthorized,
    Unprocessable,
    summarize_validation_errors,
)
from shared.phases import fail_phase
from shared.project_layout import ProjectFile
from shared.spec import WorkflowSpec

# Where a request whose token could not be verified is recorded (it proves no tenant).
UNVERIFIED_TENANT = "unverified"

E = TypeVar("E", bound=Event)
Phases = dict[int, WorkflowPhase]
# (event, unit of work, workflow, phases) -> whether anything changed
RecordUpdate = Callable[[E, UnitOfWork, Workflow, Phases], Awaitable[bool]]


def create_handlers(context: ClusterContext) -> NatsRouter:
    router = NatsRouter()
    deadlines = DeadlinePolicy.from_settings(context.settings)

    @durable_subscriber(router, WorkflowRequested, "cluster-setup")
    async def on_workflow_requested(event: WorkflowRequested) -> None:
        async with context.unit_of_work() as uow:
            if not await uow.first_time("cluster-setup", event.event_id):
                return
            # Idempotent on the requester's workflow id too (it may publish twice).
            if await WorkflowRepository(uow.session, SYSTEM).get(event.workflow_id):
                return
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
                errors = [dict(e) for e in exc.errors()]
                reason = "invalid spec: " + summarize_validation_errors(errors, limit=len(errors))
                await record_refused_workflow(
                    uow, principal.tenant_id, event.workflow_id, event.spec, reason
                )
                return
            try:
                spec = await resolve_dataset(spec, principal.tenant_id, context)
                await check_quotas(
                    context.settings,
                    uow,
                    principal.tenant_id,
                    spec.cluster.node_count,
                    workflow=True,
                )
            except (TooManyRequests, Unprocessable) as exc:
                await record_refused_workflow(
                    uow, principal.tenant_id, event.workflow_id, event.spec, str(exc.detail)
                )
                return
            workflow, phases = await set_up_workflow(
                uow,
                context.artifacts,
                principal.tenant_id,
                spec,
                event.workflow_id,
                heartbeat_interval_s=context.settings.heartbeat_interval_s,
            )
            stamp_deadlines(deadlines, workflow, phases)

    @durable_subscriber(router, Phase1Completed, "cluster-nodes")
    async def on_phase1_completed(event: Phase1Completed) -> None:
        async with context.unit_of_work() as uow:
            if not await uow.first_time("cluster-nodes", event.event_id):
                return
            cluster = await ClusterRepository(uow.session, event.tenant_id).get(
                event.cluster_id, for_update=True
            )
            if cluster is None or cluster.status != "starting" or cluster.owner is not None:
                return
            age = (datetime.now(UTC) - event.occurred_at).total_seconds()
            if age > context.settings.node_start_max_age_s:
                reason = f"nodes were not started within {age:.0f} s of phase 1 (service down?)"
                await nodes.fail_cluster(context, uow, cluster, reason)
                return
            plans = await admit_or_queue(context, uow, cluster)
        if plans is not None:
            await launch(context, cluster, plans)

    @durable_subscriber(router, NodeRegistered, "cluster-node-registered")
    async def on_node_registered(event: NodeRegistered) -> None:
        async with context.unit_of_work() as uow:
            if not await uow.first_time("cluster-node-registered", event.event_id):
                return
            verify = await nodes.record_registration(context, uow, event)
        if verify:  # after the commit, so the check sees every registration
            context.state.spawn(
                verify_cluster(context, event.cluster_id), name=f"verify-{event.cluster_id}"
            )

    @router.subscriber(NODE_HEARTBEAT_SUBJECT.format(cluster_id="*", node_id="*"))
    async def on_heartbeat(body: dict[str, Any]) -> None:
        note_heartbeat(context.state, body)
        adoption.on_heartbeat(context, body)

    def record(
        event_type: type[E], consumer: str, subject: str | None = None, **options: Any
    ) -> Any:
        """Register `update` as a durable, idempotent consumer of `event_type` that gets the
        event's workflow (locked) and its phases; unknown workflows are acknowledged and
        skipped. `options` go to `durable_subscriber`."""

        def register(update: RecordUpdate[E]) -> RecordUpdate[E]:
            async def handle(event: E) -> None:
                if event.workflow_id is None:
                    return  # a dead letter of a malformed message names no workflow
                async with context.unit_of_work() as uow:
                    if not await uow.first_time(consumer, event.event_id):
                        return
                    workflows = WorkflowRepository(uow.session, event.tenant_id)
                    workflow = await workflows.get(event.workflow_id, for_update=True)
                    if workflow is None:
                        return  # not ours (or another tenant's claim): nothing to update
                    phases = await workflows.phases_of(workflow.id)
                    if await update(event, uow, workflow, phases):
                        stamp_deadlines(deadlines, workflow, phases)

            durable_subscriber(router, event_type, consumer, subject=subject, **options)(handle)
            return update

        return register

    def report_uri(workflow: Workflow) -> str:
        return context.artifacts.workflow_url(workflow.tenant_id, workflow.id, ProjectFile.REPORT)

    @record(Phase2Completed, "cluster-status-phase2")
    async def on_phase2(event: Phase2Completed, uow: UnitOfWork, wf: Workflow, ph: Phases) -> bool:
        detail = {"architecture": event.architecture, "nodes": len(event.nodes), **event.gates}
        return record_phase_completed(wf, ph, 2, detail)

    @record(Phase3Completed, "cluster-status-phase3")
    async def on_phase3(event: Phase3Completed, uow: UnitOfWork, wf: Workflow, ph: Phases) -> bool:
        detail = {"job_id": str(event.job_id), "metrics": _scalars(event.metrics)}
        return record_phase_completed(wf, ph, 3, detail)

    @record(Phase4Passed, "cluster-status-phase4")
    async def on_phase4(event: Phase4Passed, uow: UnitOfWork, wf: Workflow, ph: Phases) -> bool:
        detail = {"validation_id": str(event.validation_id), "metrics": _scalars(event.metrics)}
        # A classifier's test accuracy, or a regression model's R² (the other stays None).
        scores = {k: event.metrics.get(k) for k in ("test_accuracy", "test_r2", "test_rmse")}
        # Recorded even if phase 5's event was handled first.
        record_result(wf, {"report_uri": report_uri(wf), **scores})
        return record_phase_completed(wf, ph, 4, detail)

    @record(Phase5Completed, "cluster-status-phase5")
    async def on_phase5(event: Phase5Completed, uow: UnitOfWork, wf: Workflow, ph: Phases) -> bool:
        detail = {"deployment_id": str(event.deployment_id), "served_url": event.served_url}
        values = {"served_url": event.served_url, "model_id": str(event.model_id)}
        record_result(wf, {**values, "report_uri": report_uri(wf)})
        changed = record_phase_completed(wf, ph, 5, detail)
        await nodes.release_workflow_nodes(context, uow, wf.tenant_id, wf.id)
        return changed

    @record(TrainingProgress, "cluster-status-progress")
    async def on_progress(
        event: TrainingProgress, uow: UnitOfWork, wf: Workflow, ph: Phases
    ) -> bool:
        progress = {
            "epoch": event.epoch,
            "epochs": event.epochs,
            "train_loss": event.train_loss,
            "val_accuracy": event.val_accuracy,
            "val_r2": event.val_r2,
            "samples_per_second": event.samples_per_second,
            "workers": sum(1 for n in event.nodes or [] if n.get("role") == "worker") or None,
        }
        if not record_progress(wf, ph, progress):
            return False
        extend_for_epoch(deadlines, wf, ph, progress, event.seconds)
        return True

    async def on_failed(event: PhaseFailed, uow: UnitOfWork, wf: Workflow, ph: Phases) -> bool:
        failed = record_phase_failed(wf, ph, event.phase, event.reason)
        await nodes.release_workflow_nodes(context, uow, wf.tenant_id, wf.id)
        return failed

    @record(EventDeadLettered, "cluster-dead-letters", "nexus.deadletter.>", dead_letters=False)
    async def on_dead_letter(
        event: EventDeadLettered, uow: UnitOfWork, wf: Workflow, ph: Phases
    ) -> bool:
        """A consumer gave up on an event of this workflow after retrying it: the workflow
        cannot go on, so it fails in its current phase (whose owner then cleans up)."""
        reason = f"an event could not be handled: {event.reason}"
        if not record_phase_failed(wf, ph, wf.current_phase, reason):
            return False
        await fail_phase(uow, wf.current_phase, wf.id, wf.tenant_id, reason)
        return True

    # One durable consumer per phase's failure subject: a wildcard could catch other events.
    for phase in range(1, 6):
        record(PhaseFailed, f"cluster-status-phase{phase}-failed", f"nexus.phase{phase}.failed")(
            on_failed
        )

    return router


def _scalars(values: dict[str, Any]) -> dict[str, Any]:
    """The plain figures of a metrics dict, for a phase's detail (histories stay in memory)."""
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}
