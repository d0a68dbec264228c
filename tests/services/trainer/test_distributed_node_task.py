"""The `train` task as the processes of one job: each rank in its own process, meeting at a
store as a cluster's coordinator hosts one. The lead alone reports, with every rank's own
figures; the generated train.py then reproduces the job's weights to the bit, both run
plainly (it starts the ranks itself) and under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist

from services.cluster.service.setup import scaffold_project
from services.trainer.node_task import run_training
from services.trainer.service.design import design_network
from services.trainer.service.project_files import write_design_files
from shared.artifacts import ArtifactStore, local_path
from shared.contracts import Rendezvous, TrainingFinished, TrainTask
from shared.spec import WorkflowSpec
from tests.services.trainer.conftest import REPO_ROOT, CollectingContext, node, train_payload
from tests.support import warm_processes

WORKERS = 2
JOB_TIMEOUT_S = 180


def _spec(strategy: str, **training: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {
            "name": f"digits-{strategy}",
            "dataset": "digits",
            "training": {
                "strategy": strategy,
                "epochs": 4,
                "batch_size": 32,
                "learning_rate": 0.01,
                "checkpoint_every": 2,
                "patience": 10,
                **training,
            },
            "cluster": {"workers": WORKERS, "parameter_servers": 1, "validators": 1},
        }
    )


def _rank_process(payload: dict[str, Any], artifacts_url: str, out: str) -> None:
    """One node's task thread, in a fresh process: run the rank, keep what it published."""
    rank = payload["placement"]["rank"]
    worker = node("worker", rank, payload["placement"]["members"][rank])
    context = CollectingContext(artifacts_url, node=worker)
    run_training(payload, context)
    published = [{"type": type(e).__name__, **e.model_dump(mode="json")} for e in context.published]
    Path(out).write_text(json.dumps(published))
    # Leave as a node process does (services/cluster/node/__main__.py): torch's teardown of
    # gloo's threads can abort a process that has finished its work.
    os._exit(0)


def _run_job(spec: WorkflowSpec, store: ArtifactStore, servers: int, tmp: Path) -> list[list[dict]]:
    """All ranks of one job; returns what each rank published, by rank."""
    members = [f"ps-{i}" for i in range(servers)] + [f"worker-{i}" for i in range(WORKERS)]
    # The coordinator's warm store, as `rendezvous` makes a node host it.
    store_server = dist.TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60)
    )
    meet = Rendezvous(node_id="coordinator", host="127.0.0.1", port=store_server.port)
    placement = {"members": members, "servers": servers, "timeout_s": 60}
    base = train_payload(store, spec, placement={"rank": 0, **placement, "rendezvous": meet})
    spawn = warm_processes()
    processes, outputs = [], []
    for rank in range(len(members)):
        payload = {**base, "placement": {**base["placement"], "rank": rank}}
        TrainTask.model_validate(payload)  # what the trainer service would send
        out = tmp / f"rank-{rank}.json"
        process = spawn.Process(target=_rank_process, args=(payload, store.root_url, str(out)))
        process.start()
        processes.append(process)
        outputs.append(out)
    for process in processes:
        process.join(JOB_TIMEOUT_S)
        assert process.exitcode == 0
    return [json.loads(out.read_text()) for out in outputs]


@pytest.fixture(scope="module")
def ddp_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[ArtifactStore, dict, list]:
    tmp = tmp_path_factory.mktemp("ddp")
    store = ArtifactStore(f"file://{tmp / 'artifacts'}")
    spec = _spec("ddp")
    published = _run_job(spec, store, 0, tmp)
    finished = next(e for e in published[0] if e["type"] == "TrainingFinished")
    return store, finished, published


def test_the_lead_reports_the_job_with_every_rank_s_own_rows(ddp_job: Any) -> None:
    _, finished, published = ddp_job
    assert finished["succeeded"], finished["error"]
    assert published[1] == []  # the other rank only ever reports a failure
    result = finished["result"]
    progress = [e for e in published[0] if e["type"] == "TrainingProgress"]
    assert [e["epoch"] for e in progress] == [1, 2, 3, 4]
    for epoch in progress:
        workers = [n for n in epoch["nodes"] if n["role"] == "worker"]
        assert [n["node_id"] for n in workers] == ["worker-0", "worker-1"]
        assert workers[0]["samples"] == workers[1]["samples"] > 0
        assert epoch["samples"] == sum(n["samples"] for n in workers)
        assert all(n["rss_mb"] > 0 and n["cpu_percent"] >= 0 for n in workers)
    assert [n["node_id"] for n in result["nodes"]] == ["worker-0", "worker-1"]
    assert result["kept"]["epoch"] == result["best_epoch"]


def test_a_parameter_server_job_reports_its_server_too(tmp_path: Path) -> None:
    store = ArtifactStore(f"file://{tmp_path / 'artifacts'}")
    spec = _spec("parameter_server", ps_mode="async", max_staleness=1)
    published = _run_job(spec, store, 1, tmp_path)
    finished = TrainingFinished.model_validate(
        next(e for e in published[1] if e["type"] == "TrainingFinished")
    )
    assert finished.succeeded, finished.error
    assert published[0] == [] and published[2] == []
    roles = [n["role"] for n in finished.result.nodes]
    assert roles == ["parameter_server", "worker", "worker"]
    assert finished.result.nodes[0]["samples"] == 0 and finished.result.nodes[1]["samples"] > 0


def _project(store: ArtifactStore, finished: dict, tmp: Path) -> Path:
    """The job's generated project: phase 1's configs, phase 2's files, phase 3's model."""
    spec = _spec("ddp")
    tenant, workflow = "t-test", uuid.UUID(finished["workflow_id"])
    scaffold_project(store, tenant, workflow, spec, heartbeat_interval_s=0.5)
    write_design_files(store, tenant, workflow, spec, design_network(spec))
    copy = tmp / "project"
    shutil.copytree(local_path(store.workflow_url(tenant, workflow)), copy)
    return copy / "neural"


@pytest.mark.parametrize("launcher", ["plain", "torchrun"])
def test_train_script_reproduces_the_ddp_job(ddp_job: Any, tmp_path: Path, launcher: str) -> None:
    store, finished, _ = ddp_job
    project = _project(store, finished, tmp_path)
    original = json.loads((project / "models/model-metadata.json").read_text())
    output = tmp_path / "retrained"
    script = [str(project / "scripts/train.py"), "--output", str(output)]
    command = [sys.executable, *script]
    if launcher == "torchrun":
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",  # a rendezvous on a free local port
            "--nproc-per-node",
            str(WORKERS),
            *script,
        ]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "epoch 4/4" in run.stdout
    retrained = json.loads((output / "model-metadata.json").read_text())
    # Same seed, split, shards and steps on one thread per rank: bit-identical weights.
    assert retrained["weights_sha256"] == original["weights_sha256"]
    assert retrained["extra"]["strategy"] == "ddp" and retrained["extra"]["world_size"] == 2


def test_a_rank_that_fails_fails_the_job_within_the_collective_timeout(tmp_path: Path) -> None:
    # Rank 1 cannot even start (its payload names no dataset Nexus has), so rank 0 waits at
    # the rendezvous for it: for the job's timeout, not gloo's default of half an hour.
    store = ArtifactStore(f"file://{tmp_path / 'artifacts'}")
    spec = _spec("ddp")
    store_server = dist.TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60)
    )
    meet = Rendezvous(node_id="coordinator", host="127.0.0.1", port=store_server.port)
    placement = {"members": ["worker-0", "worker-1"], "timeout_s": 3, "rendezvous": meet}
    base = train_payload(store, spec, placement={"rank": 0, **placement})
    broken = {**base, "placement": {**base["placement"], "rank": 1}}
    broken["spec"] = {**base["spec"], "dataset": "imagenet"}
    spawn = warm_processes()
    outputs = [tmp_path / "rank-0.json", tmp_path / "rank-1.json"]
    processes = [
        spawn.Process(target=_rank_process, args=(payload, store.root_url, str(out)))
        for payload, out in zip((base, broken), outputs, strict=True)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    lead, other = (json.loads(out.read_text()) for out in outputs)
    assert [e["type"] for e in other] == ["TrainingFinished"]
    assert not other[0]["succeeded"] and "unknown dataset" in other[0]["error"]
    assert [e["type"] for e in lead] == ["TrainingFinished"]
    assert not lead[0]["succeeded"]
    assert lead[0]["result"]["seconds"] < 30


def test_a_cancel_ends_the_wait_at_the_rendezvous_at_once(tmp_path: Path) -> None:
    # The other rank never comes (it was refused): the trainer cancels this one, which must
    # not sit out the job's timeout.
    import threading
    import time

    store = ArtifactStore(f"file://{tmp_path / 'artifacts'}")
    store_server = dist.TCPStore(
        "127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=60)
    )
    meet = Rendezvous(node_id="coordinator", host="127.0.0.1", port=store_server.port)
    placement = {"rank": 0, "members": ["worker-0", "worker-1"], "timeout_s": 120}
    payload = train_payload(store, _spec("ddp"), placement={**placement, "rendezvous": meet})
    context = CollectingContext(store.root_url, node=node("worker", 0, "worker-0"))
    threading.Timer(0.5, context.cancelled.set).start()
    started = time.monotonic()
    run_training(payload, context)
    assert time.monotonic() - started < 10
    finished = context.finished
    assert not finished.succeeded and finished.result.cancelled
    assert "cancelled at the rendezvous" in (finished.error or "")
