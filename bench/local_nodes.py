"""Real node processes for benchmarks: `python -m services.cluster.node`, as the cluster
service starts them, on the NATS at NEXUS_NATS_URL (default nats://127.0.0.1:4222). They
elect a coordinator as a cluster does (`verify_topology`) and run `train` tasks sent as the
trainer sends them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.cluster.process_manager import node_command
from services.cluster.service.topology import NodeAddress, verify_topology
from shared.artifacts import ArtifactStore
from shared.bus import STREAM_CONFIG, STREAM_NAME
from shared.contracts import JobPlacement, Rendezvous, TrainArtifacts, TrainTask
from shared.node_tasks import request_node_task
from shared.spec import WorkflowSpec

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TENANT = "t-bench"


class LocalNodes:
    """`async with LocalNodes(home, roles) as nodes:` starts, registers and connects them."""

    def __init__(self, home: Path, roles: list[str]) -> None:
        self._home = home
        self._roles = roles
        self.nats_url = os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222")
        self.cluster_id = uuid.uuid4()
        self.store = ArtifactStore(f"file://{home / 'artifacts'}")
        self.nodes: list[NodeAddress] = []
        self.rendezvous: Rendezvous | None = None
        self.connected_seconds = 0.0  # from starting the processes to a connected topology
        self._processes: list[subprocess.Popen[bytes]] = []
        self._nc: Client
        self._finished: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def __aenter__(self) -> LocalNodes:
        self._nc = await nats.connect(self.nats_url)
        js = self._nc.jetstream()
        try:
            await js.stream_info(STREAM_NAME)
        except Exception:  # not there yet: the services would create it
            await js.add_stream(STREAM_CONFIG)
        registered: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def on_registered(msg: Msg) -> None:
            event = json.loads(msg.data)
            if event["cluster_id"] == str(self.cluster_id):
                await registered.put(event["node"])

        await self._nc.subscribe("nexus.node.registered", cb=on_registered)
        await self._nc.subscribe("nexus.training.finished", cb=self._on_finished)
        env = {
            **os.environ,
            "NEXUS_NATS_URL": self.nats_url,
            "NEXUS_HOME": str(self._home),
            "NEXUS_ARTIFACTS": self.store.root_url,
            "NEXUS_LOG_LEVEL": "WARNING",
        }
        started = time.perf_counter()
        ranks: dict[str, int] = {}
        logs = self._home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        for role in self._roles:
            rank = ranks[role] = ranks.get(role, -1) + 1
            node_id = f"{self.cluster_id.hex[:8]}-{role}-{rank}"
            command = node_command(
                self.cluster_id,
                node_id,
                role,
                rank,
                tenant_id=TENANT,
                workflow_id=self.cluster_id,
            )
            log = (logs / f"{node_id}.log").open("wb")
            self._processes.append(
                subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=log)
            )
        for _ in self._roles:
            info = await asyncio.wait_for(registered.get(), 60)
            self.nodes.append(NodeAddress(info["node_id"], info["role"], info["rank"], "127.0.0.1"))
        topology = await verify_topology(self._nc, self.nodes, timeout=60)
        if not topology["connected"]:
            raise RuntimeError(f"the nodes did not connect: {topology['checks']}")
        self.rendezvous = Rendezvous.model_validate(topology["rendezvous"])
        self.connected_seconds = time.perf_counter() - started
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        await self._nc.close()

    async def _on_finished(self, msg: Msg) -> None:
        event = json.loads(msg.data)
        future = self._finished.get(event["job_id"])
        if future is not None and not future.done():
            future.set_result(event)

    async def idle(self, timeout: float = 30) -> None:
        """Until no node is busy: a rank may still be leaving its group when the lead's
        `training.finished` arrives."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = await asyncio.gather(
                *(
                    request_node_task(self._nc, n.node_id, str(uuid.uuid4()), "ping", {}, 5)
                    for n in self.nodes
                )
            )
            if not any(reply.get("busy") for reply in replies):
                return
            await asyncio.sleep(0.01)
        raise TimeoutError("nodes still busy")

    def members(self, strategy: str) -> tuple[list[str], int]:
        def ranked(role: str) -> list[str]:
            return [n.node_id for n in sorted(self.nodes, key=lambda n: n.rank) if n.role == role]

        workers = ranked("worker")
        if strategy == "single":
            return workers[:1], 0
        if strategy == "ddp":
            return workers, 0
        servers = ranked("parameter_server")
        return [*servers, *workers], len(servers)

    async def train(
        self, spec: WorkflowSpec, architecture: dict[str, Any]
    ) -> tuple[float, dict[str, Any]]:
        """One job, as the trainer dispatches it: (seconds from sending the tasks to the
        `training.finished` of the stored model, that event)."""
        assert self.rendezvous is not None
        await self.idle()
        members, servers = self.members(spec.training.strategy)
        job_id, workflow_id = uuid.uuid4(), uuid.uuid4()
        future = asyncio.get_running_loop().create_future()
        self._finished[str(job_id)] = future

        def task(rank: int) -> dict[str, Any]:
            placement = None
            if spec.training.strategy != "single":
                placement = JobPlacement(
                    rank=rank, members=members, servers=servers, rendezvous=self.rendezvous
                )
            return TrainTask(
                job_id=job_id,
                workflow_id=workflow_id,
                tenant_id=TENANT,
                cluster_id=self.cluster_id,
                spec=spec,
                architecture=architecture,
                artifacts=TrainArtifacts.for_workflow(self.store, TENANT, workflow_id),
                placement=placement,
            ).model_dump(mode="json")

        started = time.perf_counter()
        replies = await asyncio.gather(
            *(
                request_node_task(self._nc, node_id, str(job_id), "train", task(rank), 10)
                for rank, node_id in enumerate(members)
            )
        )
        if not all(reply.get("accepted") for reply in replies):
            raise RuntimeError(f"a node refused the job: {replies}")
        event = await asyncio.wait_for(future, 600)
        seconds = time.perf_counter() - started
        if not event["succeeded"]:
            raise RuntimeError(f"the job failed: {event['error']}")
        return seconds, event
