"""Proves a cluster's topology is connected before training is allowed on it: every worker
and parameter server joins one gloo process group and all-reduces a tensor (`connect`), and
every validator answers a `ping`."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

from shared.node_tasks import request_node_task
from shared.processes import free_port

PING_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class NodeAddress:
    node_id: str
    role: str
    rank: int
    host: str


def process_group(nodes: list[NodeAddress]) -> list[NodeAddress]:
    """Parameter servers first (the first one hosts the rendezvous), then workers."""
    role_order = {"parameter_server": 0, "worker": 1}
    members = [n for n in nodes if n.role in role_order]
    return sorted(members, key=lambda n: (role_order[n.role], n.rank))


async def _check(
    nc: Client, node: NodeAddress, kind: str, payload: dict[str, Any], timeout: float
) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        reply = await request_node_task(nc, node.node_id, str(uuid.uuid4()), kind, payload, timeout)
        ok = bool(reply.get("accepted")) and (kind == "ping" or bool(reply.get("ok")))
        error = None if ok else str(reply.get("error") or reply)
    except Exception as exc:  # a timeout or no responder: the node is unreachable
        ok, error = False, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return {
        "node_id": node.node_id,
        "role": node.role,
        "check": kind,
        "ok": ok,
        "error": error,
        "seconds": round(time.perf_counter() - started, 3),
    }


async def verify_topology(nc: Client, nodes: list[NodeAddress], timeout: float) -> dict[str, Any]:
    """Run every check concurrently; `connected` only when all of them passed."""
    group = process_group(nodes)
    checks = []
    master = group[0] if group else None
    if master is not None:
        port = free_port(master.host)
        for rank, node in enumerate(group):
            payload = {
                "master_addr": master.host,
                "master_port": port,
                "world_size": len(group),
                "rank": rank,
                # The node gives up first, so its reply (not our timeout) says what failed.
                "timeout_s": max(1.0, timeout - 5.0),
            }
            checks.append(_check(nc, node, "connect", payload, timeout))
    for node in nodes:
        if node.role == "validator":
            checks.append(_check(nc, node, "ping", {}, PING_TIMEOUT_S))
    results = list(await asyncio.gather(*checks))
    return {
        "connected": bool(results) and all(r["ok"] for r in results),
        "backend": "gloo",
        "world_size": len(group),
        "master": master.node_id if master else None,
        "checks": results,
    }
