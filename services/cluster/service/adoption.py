"""Taking over the nodes of a cluster service process that died. Its nodes go on training
(they wait `node_orphan_grace_s` for a new owner); a restarted service on the same host hears
their heartbeats and adopts each one, so the workflows on them go on as if nothing happened.
Clusters none of whose nodes is adopted within the window are abandoned (`recover_orphans`)."""

from __future__ import annotations

import json
import logging
import os
import time

import psutil
from nats.errors import Error as NatsError

from services.cluster.models import Cluster
from services.cluster.process_manager import local_node_process
from services.cluster.repository import ACTIVE_CLUSTER, LIVE_NODE, ClusterRepository
from services.cluster.state import ClusterContext, ClusterState
from shared.db import SYSTEM, UnitOfWork
from shared.subjects import NODE_ADOPT_SUBJECT

logger = logging.getLogger(__name__)

ADOPT_TIMEOUT_S = 2.0
# Node ids heard that are not this process's to adopt (another host's, a live sibling
# service's): remembered so their heartbeats cost no query; forgotten wholesale when full.
MAX_REMEMBERED = 10_000


def owner_died_here(owner: str, host: str) -> bool:
    """True when `owner` (`host:pid`, a cluster's) was a process on `host` that is gone."""
    owner_host, _, owner_pid = owner.rpartition(":")
    return owner_host == host and owner_pid.isdigit() and not psutil.pid_exists(int(owner_pid))


def orphaned(owner: str | None, state: ClusterState) -> bool:
    """True when `owner` (a cluster's) is this process, or a dead process on this host."""
    if owner is None:
        return False
    return owner == state.owner or owner_died_here(owner, state.owner.rpartition(":")[0])


def on_heartbeat(context: ClusterContext, body: dict[str, object]) -> None:
    """Start adopting the node a heartbeat came from, if no process of ours runs it."""
    state = context.state
    node_id, pid = body.get("node_id"), body.get("pid")
    if not isinstance(node_id, str) or not isinstance(pid, int):
        return
    if state.manager.has(node_id) or node_id in state.not_ours or node_id in state.adopting:
        return
    state.adopting.add(node_id)
    state.spawn(_adopt(context, node_id, pid), name=f"adopt-{node_id}")


async def _adopt(context: ClusterContext, node_id: str, pid: int) -> None:
    try:
        async with context.unit_of_work() as uow:
            await adopt_node(context, uow, node_id, pid)
    finally:
        context.state.adopting.discard(node_id)


async def adopt_node(context: ClusterContext, uow: UnitOfWork, node_id: str, pid: int) -> bool:
    """Adopt node `node_id` (process `pid` on this host) when its cluster's owner is gone:
    the node follows this process from now on and the cluster is ours. A node of such a
    cluster that was declared lost meanwhile is killed: its job went on without it."""
    state = context.state
    repo = ClusterRepository(uow.session, SYSTEM)
    node = await repo.node(node_id)
    cluster = await repo.get(node.cluster_id, for_update=True) if node is not None else None
    process = local_node_process(node_id, pid)
    if (
        node is None
        or cluster is None
        or process is None
        or cluster.status not in ACTIVE_CLUSTER
        or not orphaned(cluster.owner, state)
    ):
        _remember_not_ours(state, node_id)
        return False
    if node.status not in LIVE_NODE:
        logger.warning("killing node %s of an orphaned cluster: it was declared lost", node_id)
        process.kill()
        _remember_not_ours(state, node_id)
        return False
    if not await _ask_to_follow(context, node_id):
        return False  # asked again at its next heartbeat
    state.manager.adopt(cluster.id, node_id, process)
    state.last_heard[node_id] = time.monotonic()
    _take_over(state, cluster)
    return True


def _take_over(state: ClusterState, cluster: Cluster) -> None:
    if cluster.owner != state.owner:
        logger.warning("took over cluster %s from service process %s", cluster.id, cluster.owner)
        cluster.owner = state.owner
    if cluster.status == "starting":  # its registration deadline runs from now
        state.starting.setdefault(cluster.id, time.monotonic())


async def _ask_to_follow(context: ClusterContext, node_id: str) -> bool:
    body = json.dumps({"owner_pid": os.getpid()}).encode()
    subject = NODE_ADOPT_SUBJECT.format(node_id=node_id)
    try:
        reply = await context.broker.connection.request(subject, body, timeout=ADOPT_TIMEOUT_S)
        answer = json.loads(reply.data)
    except (NatsError, TimeoutError, ValueError) as exc:
        logger.warning("node %s did not accept adoption: %s", node_id, exc)
        return False
    if not isinstance(answer, dict) or answer.get("adopted") is not True:
        logger.warning("node %s refused adoption: %s", node_id, answer)
        return False
    return True


def _remember_not_ours(state: ClusterState, node_id: str) -> None:
    if len(state.not_ours) >= MAX_REMEMBERED:
        state.not_ours.clear()
    state.not_ours.add(node_id)
