"""The cluster service's background tasks. Like the NATS handlers, each opens and owns its
transactions and calls the domain code in `service/`."""

from __future__ import annotations

import asyncio
import logging
import uuid

from services.cluster.models import Cluster
from services.cluster.process_manager import NodePlan
from services.cluster.service import admission, nodes, supervision
from services.cluster.service.topology import verify_topology
from services.cluster.state import ClusterContext
from shared.telemetry import step

logger = logging.getLogger(__name__)

HEARTBEAT_FLUSH_INTERVAL_S = 1.0
# Queued clusters are looked at when nodes stop, and at least this often (another service
# process on the host may have freed the room).
ADMISSION_INTERVAL_S = 2.0
# Detection time is at most the silence allowed plus one period of this check.
LOSS_CHECKS_PER_INTERVAL = 4


async def start(context: ClusterContext) -> None:
    """At start-up: start the loops, and give up the clusters of a dead predecessor whose
    nodes did not come to this process (by their heartbeats) within the adoption window;
    warm up the node fork server meanwhile."""
    if context.state.manager.launcher is not None:
        context.state.manager.launcher.start_in_background()
    context.state.spawn(recover_orphans_later(context), name="cluster-orphans")
    context.state.spawn(flush_heartbeats_forever(context), name="cluster-heartbeats")
    context.state.spawn(watch_forever(context), name="cluster-watchdog")
    context.state.spawn(detect_losses_forever(context), name="cluster-loss-detector")
    context.state.spawn(admit_forever(context), name="cluster-admission")
    changes = context.state.changes.listen_forever(context.engine)
    context.state.spawn(changes, name="cluster-workflow-changes")


async def stop(context: ClusterContext) -> None:
    """On shutdown: stop every node this process started; their workflows cannot go on."""
    state = context.state
    await state.cancel_tasks()
    try:
        async with context.unit_of_work() as uow:
            await supervision.abandon_owned(context, uow)
    finally:
        await asyncio.to_thread(state.manager.stop_all, context.settings.node_stop_grace_s)
        if state.manager.launcher is not None:
            await asyncio.to_thread(state.manager.launcher.stop)


async def recover_orphans_later(context: ClusterContext) -> None:
    await asyncio.sleep(supervision.adoption_window_s(context.settings))
    async with context.unit_of_work() as uow:
        await supervision.recover_orphans(context, uow)


async def launch(context: ClusterContext, cluster: Cluster, plans: list[NodePlan]) -> None:
    """Start the claimed nodes' processes (no transaction is open while they start), then
    record their pids, or the cluster's failure."""
    outcome = await nodes.start_processes(context, cluster, plans)
    async with context.unit_of_work() as uow:
        await nodes.record_launch(context, uow, cluster.id, outcome)


async def admit_forever(context: ClusterContext) -> None:
    """Start the queued clusters that fit, in order, whenever room may have freed."""
    freed = context.state.capacity_freed
    while True:
        try:
            await asyncio.wait_for(freed.wait(), ADMISSION_INTERVAL_S)
        except TimeoutError:
            pass
        freed.clear()
        try:
            async with context.unit_of_work() as uow:
                admitted = await admission.admit_queued(context, uow)
            await asyncio.gather(*(launch(context, c, plans) for c, plans in admitted))
        except Exception:
            logger.exception("could not start queued clusters")


async def flush_heartbeats_forever(context: ClusterContext) -> None:
    state = context.state
    while True:
        await asyncio.sleep(HEARTBEAT_FLUSH_INTERVAL_S)
        beats, state.heartbeats = state.heartbeats, {}
        if not beats:
            continue
        try:
            async with context.unit_of_work() as uow:
                await supervision.record_heartbeats(uow, beats)
        except Exception:
            logger.exception("could not record %d heartbeats", len(beats))


async def detect_losses_forever(context: ClusterContext) -> None:
    """Look for exited and silent nodes a few times per heartbeat interval; the database is
    touched only when one is found."""
    period = context.settings.heartbeat_interval_s / LOSS_CHECKS_PER_INTERVAL
    unrecorded: dict[str, supervision.Loss] = {}  # a reaped exit is seen only once
    while True:
        await asyncio.sleep(period)
        losses = {**unrecorded, **supervision.losses_now(context)}
        if not losses:
            continue
        try:
            async with context.unit_of_work() as uow:
                await supervision.declare_lost(context, uow, losses)
            unrecorded = {}
        except Exception:
            logger.exception("could not record lost nodes %s", sorted(losses))
            unrecorded = losses


async def watch_forever(context: ClusterContext) -> None:
    while True:
        await asyncio.sleep(supervision.WATCHDOG_INTERVAL_S)
        try:
            async with context.unit_of_work() as uow:
                await supervision.watch_once(context, uow)
        except Exception:
            logger.exception("cluster watchdog pass failed")


async def verify_cluster(context: ClusterContext, cluster_id: uuid.UUID) -> None:
    """Check a fully registered cluster's topology (no transaction is open while the nodes
    rendezvous), then record how it came up."""
    state = context.state
    try:
        async with context.unit_of_work() as uow:
            members = await nodes.topology_members(context, uow, cluster_id)
        if members is None:
            return
        with step("check topology", nodes=len(members)):
            topology = await verify_topology(
                context.broker.connection, members, context.settings.topology_timeout_s
            )
        async with context.unit_of_work() as uow:
            await nodes.conclude_start(context, uow, cluster_id, topology)
    finally:
        state.verifying.discard(cluster_id)
        state.starting.pop(cluster_id, None)
