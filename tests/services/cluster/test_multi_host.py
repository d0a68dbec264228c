"""Multi-host by construction: node processes started by hand, each with only the cluster id,
the NATS URL and the address it is reached on (three different loopback addresses here, as
three hosts would have three), elect a coordinator, meet at its rendezvous and train one DDP
job across the two workers."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client

from services.cluster.process_manager import PROJECT_ROOT, node_command
from services.cluster.service.topology import NodeAddress, verify_topology
from shared.artifacts import ArtifactStore
from shared.contracts import JobPlacement, Rendezvous, TrainArtifacts, TrainTask
from shared.node_tasks import request_node_task
from shared.spec import WorkflowSpec

# One address per "host": the coordinator (a parameter server) and two workers.
HOSTS = {"parameter_server-0": "127.0.0.2", "worker-0": "127.0.0.3", "worker-1": "127.0.0.4"}
TENANT = "t-multi-host"


def _node_command(cluster_id: uuid.UUID, name: str, host: str) -> list[str]:
    role, rank = name.rsplit("-", 1)
    node_id = f"{cluster_id.hex[:8]}-{name}"
    return node_command(
        cluster_id, node_id, role, int(rank), tenant_id=TENANT, workflow_id=cluster_id, host=host
    )


@pytest.fixture
async def hosts(service_env: dict[str, str], watch: Any) -> AsyncIterator[list[NodeAddress]]:
    """Three registered node processes, each advertising its own address."""
    cluster_id = uuid.uuid4()
    env = {**os.environ, **service_env, "PYTHONUNBUFFERED": "1"}
    registrations = await watch("nexus.node.registered")
    processes = [
        subprocess.Popen(_node_command(cluster_id, name, host), cwd=PROJECT_ROOT, env=env)
        for name, host in HOSTS.items()
    ]
    try:
        nodes = []
        for _ in HOSTS:
            event = await registrations.wait_for(
                lambda e: e["cluster_id"] == str(cluster_id), timeout=60
            )
            info = event["node"]
            nodes.append(NodeAddress(info["node_id"], info["role"], info["rank"], info["host"]))
        yield nodes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_nodes_on_different_addresses_meet_and_train_one_job(
    hosts: list[NodeAddress], nc: Client, watch: Any, service_env: dict[str, str]
) -> None:
    topology = await verify_topology(nc, hosts, timeout=60)
    assert topology["connected"], topology["checks"]
    coordinator = next(n for n in hosts if n.role == "parameter_server")
    rendezvous = Rendezvous.model_validate(topology["rendezvous"])
    assert (rendezvous.node_id, rendezvous.host) == (coordinator.node_id, "127.0.0.2")

    workers = sorted((n for n in hosts if n.role == "worker"), key=lambda n: n.rank)
    assert {w.host for w in workers} == {"127.0.0.3", "127.0.0.4"}
    spec = WorkflowSpec.model_validate(
        {
            "name": "multi-host",
            "dataset": "iris",
            "training": {"strategy": "ddp", "epochs": 3, "batch_size": 16, "patience": 10},
        }
    )
    workflow_id = uuid.uuid4()
    store = ArtifactStore(f"file://{service_env['NEXUS_HOME']}/artifacts")
    members = [w.node_id for w in workers]
    finished = await watch("nexus.training.finished")
    job_id = uuid.uuid4()
    for rank, worker in enumerate(workers):
        task = TrainTask(
            job_id=job_id,
            workflow_id=workflow_id,
            tenant_id=TENANT,
            cluster_id=uuid.uuid4(),
            spec=spec,
            architecture={
                "input_dim": 4,
                "num_classes": 3,
                "hidden_layers": [16],
                "activation": "relu",
                "dropout": 0.0,
            },
            artifacts=TrainArtifacts.for_workflow(store, TENANT, workflow_id),
            placement=JobPlacement(rank=rank, members=members, rendezvous=rendezvous, timeout_s=60),
        )
        reply = await request_node_task(
            nc, worker.node_id, str(job_id), "train", task.model_dump(mode="json"), 10
        )
        assert reply["accepted"], reply

    event = await finished.wait_for(lambda e: e["job_id"] == str(job_id), timeout=120)
    assert event["succeeded"], event["error"]
    assert event["node_id"] == workers[0].node_id  # the lead reports for the job
    nodes = event["result"]["nodes"]
    assert [n["node_id"] for n in nodes] == members
    assert all(n["samples"] > 0 for n in nodes)
