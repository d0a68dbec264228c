"""Proves a cluster's topology is connected before training is allowed on it, and elects its
coordinator. The coordinator (the first parameter server, else worker rank 0) hosts the
cluster's rendezvous, a TCPStore on a port of its own host (`rendezvous`); every worker and
parameter server then joins one gloo process group there and all-reduces a tensor
(`connect`); every validator answers a `ping`. Jobs later meet at the same rendezvous."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client

from shared.node_tasks import request_node_task

PING_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class NodeAddress:
    node_id: str
    role: str
    rank: int
    host: str


def _backend(group: list[NodeAddress], results: list[dict[str, Any]]) -> str:
    """NCCL when every worker has a GPU of its own (each host has at least as many GPUs as
    workers: NCCL refuses two ranks on one GPU), else gloo."""
    replies = {r["node_id"]: r["reply"] for r in results if r["check"] == "connect"}
    workers = [n for n in group if n.role == "worker"]
    per_host: dict[str, int] = {}
    for worker in workers:
        per_host[worker.host] = per_host.get(worker.host, 0) + 1
    own_gpu = all(
        replies.get(w.node_id, {}).get("cuda_devices", 0) >= per_host[w.host] for w in workers
    )
    return "nccl" if workers and own_gpu else "gloo"


def process_group(nodes: list[NodeAddress]) -> list[NodeAddress]:
    """Parameter servers first (the first one is the coordinator), then workers."""
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
        reply = {}
    return {
        "reply": reply,
        "node_id": node.node_id,
        "role": node.role,
        "check": kind,
        "ok": ok,
        "error": error,
        "seconds": round(time.perf_counter() - started, 3),
    }


async def verify_topology(nc: Client, nodes: list[NodeAddress], timeout: float) -> dict[str, Any]:
    """Elect the coordinator, then run every check concurrently; `connected` only when all
    of them passed. `rendezvous` says where jobs meet and with which backend: NCCL when every
    worker has CUDA, else gloo."""
    group = process_group(nodes)
    master = group[0] if group else None
    results: list[dict[str, Any]] = []
    rendezvous: dict[str, Any] | None = None
    if master is not None:
        hosted = await _check(nc, master, "rendezvous", {}, timeout)
        results.append(hosted)
        if hosted["ok"]:
            where = hosted["reply"]
            rendezvous = {"node_id": master.node_id, "host": where["host"], "port": where["port"]}
    checks = []
    if rendezvous is not None:
        prefix = f"connect-{uuid.uuid4()}"
        for rank, node in enumerate(group):
            payload = {
                "master_addr": rendezvous["host"],
                "master_port": rendezvous["port"],
                "world_size": len(group),
                "rank": rank,
                "prefix": prefix,
                # The node gives up first, so its reply (not our timeout) says what failed.
                "timeout_s": max(1.0, timeout - 5.0),
            }
            checks.append(_check(nc, node, "connect", payload, timeout))
    for node in nodes:
        if node.role == "validator":
            checks.append(_check(nc, node, "ping", {}, PING_TIMEOUT_S))
    results += await asyncio.gather(*checks)
    connected = bool(results) and all(r["ok"] for r in results)
    backend = _backend(group, results)
    return {
        "connected": connected,
        "backend": backend,
        "world_size": len(group),
        "master": master.node_id if master else None,
        "rendezvous": {**rendezvous, "backend": backend} if rendezvous and connected else None,
        "checks": [{k: v for k, v in r.items() if k != "reply"} for r in results],
    }
