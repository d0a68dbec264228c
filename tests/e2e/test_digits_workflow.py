"""The whole platform as a user drives it: six services as real processes on real NATS and
Postgres, a workflow posted over HTTP (and one triggered by an event), five phases, a
served model that answers correctly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
import numpy as np
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.contracts import WorkflowRequested
from shared.ml.data import load_splits
from shared.settings import normalize_database_url
from tests.e2e.otlp_receiver import OtlpReceiver
from tests.support import memory_keys

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

MEMORY_KEYS = [
    "neural/cluster-id",
    "neural/config",
    "neural/phase1-complete",
    "neural/architecture",
    "neural/nodes-deployed",
    "neural/training-script",
    "neural/phase2-complete",
    "neural/training-job-id",
    "neural/training-metrics",
    "neural/monitoring",
    "neural/phase3-complete",
    "neural/validation",
    "neural/benchmark-results",
    "neural/report",
    "neural/phase4-complete",
    "neural/deployment-ready",
    "neural/dockerfile",
    "neural/serve-api",
    "neural/deploy-script",
    "neural/phase5-complete",
    "neural/workflow-complete",
]

GENERATED_FILES = [
    "neural/configs/training.json",
    "neural/configs/architecture.json",
    "neural/configs/dataset.json",
    "neural/configs/monitoring.json",
    "neural/scripts/train.py",
    "neural/scripts/serve.py",
    "neural/scripts/deploy.sh",
    "neural/scripts/backup-checkpoints.sh",
    "neural/tests/validation.py",
    "neural/reports/performance-report.md",
    "neural/Dockerfile",
    "neural/docs/DEPLOYMENT.md",
    "neural/models/model-metadata.json",
]


def digits_spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text())
    return spec


async def wait_for_workflow(
    client: httpx.AsyncClient, workflow_id: str, timeout: float = 300
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    workflow: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/workflows/{workflow_id}")
        if response.status_code != 404:  # 404: an event-started workflow not yet recorded
            response.raise_for_status()
            workflow = response.json()
            if workflow["status"] in ("completed", "failed"):
                return workflow
        await asyncio.sleep(0.5)
    raise TimeoutError(f"workflow {workflow_id} did not finish in {timeout}s: {workflow}")


def raw_test_rows(dataset: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Test rows as a user would send them: un-normalized features."""
    splits = load_splits(dataset, seed=seed)
    return splits.x_test_raw, splits.y_test


async def test_digits_workflow_from_request_to_served_model(
    stack: Any, user_token: str, cluster_client: httpx.AsyncClient, otlp: OtlpReceiver
) -> None:
    started = time.monotonic()
    posted = await cluster_client.post("/workflows", json=digits_spec())
    assert posted.status_code == 202, posted.text
    workflow_id = posted.json()["id"]

    workflow = await wait_for_workflow(cluster_client, workflow_id)
    elapsed = time.monotonic() - started
    assert workflow["status"] == "completed", workflow
    print(f"\ndigits workflow: request to served model in {elapsed:.1f}s")

    phases = workflow["phases"]
    assert [p["phase"] for p in phases] == [1, 2, 3, 4, 5]
    assert all(p["status"] == "completed" for p in phases)
    finished = [p["finished_at"] for p in phases]
    assert finished == sorted(finished), "phases completed out of order"

    headers = {"Authorization": f"Bearer {user_token}"}
    stored = await memory_keys(stack.url("memory"), headers, workflow_id, set(MEMORY_KEYS))
    assert not set(MEMORY_KEYS) - set(stored), f"missing keys: {set(MEMORY_KEYS) - set(stored)}"

    tenant = (await _me(stack, user_token))["tenant_id"]
    project = Path(stack.artifacts.removeprefix("file://")) / tenant / workflow_id
    missing = [f for f in GENERATED_FILES if not (project / f).is_file()]
    assert not missing, f"missing generated files: {missing}"

    result = workflow["result"]
    assert result["test_accuracy"] >= 0.97
    await assert_every_worker_trained(stack, user_token, workflow_id, roles=["worker"] * 2)
    spec = digits_spec()
    rows, labels = raw_test_rows(spec["dataset"], spec["training"]["seed"])
    async with httpx.AsyncClient(base_url=result["served_url"]) as served:
        assert (await served.get("/healthz")).status_code == 200
        # The served model is the tenant's: nobody else may ask it.
        anonymous = await served.post("/predict", json={"rows": rows.tolist()[:1]})
        assert anonymous.status_code == 401
        answer = await served.post("/predict", json={"rows": rows.tolist()}, headers=headers)
    assert answer.status_code == 200, answer.text
    predictions = np.array(answer.json()["predictions"])
    assert (predictions == labels).mean() >= 0.90

    await assert_one_trace_spans_the_workflow(otlp)


async def assert_every_worker_trained(
    stack: Any, token: str, workflow_id: str, roles: list[str]
) -> dict[str, Any]:
    """The job ran on `roles` (rank order) and each worker process reported its own rows."""
    async with httpx.AsyncClient(base_url=stack.url("trainer")) as trainer:
        headers = {"Authorization": f"Bearer {token}"}
        listed = await trainer.get("/jobs", params={"workflow_id": workflow_id}, headers=headers)
        listed.raise_for_status()
        job: dict[str, Any] = listed.json()["jobs"][0]
    nodes = job["metrics"]["nodes"]
    assert [n["role"] for n in nodes] == roles
    workers = [n for n in nodes if n["role"] == "worker"]
    assert len({n["node_id"] for n in workers}) == len(workers)
    # DistributedSampler gives every worker its own equal share of each epoch's rows.
    assert all(n["samples"] > 0 for n in workers)
    assert len({n["samples"] for n in workers}) == 1
    assert all(n["peak_rss_mb"] > 0 for n in nodes)
    return job


@pytest.mark.parametrize(
    "training",
    [{"ps_mode": "sync"}, {"ps_mode": "async", "max_staleness": 2}],
    ids=["sync", "async"],
)
async def test_a_parameter_server_workflow_trains_on_every_worker(
    stack: Any, user_token: str, cluster_client: httpx.AsyncClient, training: dict[str, Any]
) -> None:
    spec = digits_spec()
    spec["name"] = f"digits-ps-{training['ps_mode']}"
    spec["training"] = spec["training"] | {"strategy": "parameter_server", **training}
    posted = await cluster_client.post("/workflows", json=spec)
    assert posted.status_code == 202, posted.text
    workflow = await wait_for_workflow(cluster_client, posted.json()["id"])
    assert workflow["status"] == "completed", (workflow["error"], workflow["phases"])
    assert workflow["result"]["test_accuracy"] >= 0.97
    roles = ["parameter_server", "worker", "worker"]
    await assert_every_worker_trained(stack, user_token, workflow["id"], roles)


CNN = {
    "type": "layers",
    "input_shape": [1, 8, 8],
    "layers": [
        {"type": "conv2d", "filters": 16, "kernel_size": 3, "activation": "relu"},
        {"type": "batchnorm"},
        {"type": "maxpool2d", "kernel_size": 2},
        {
            "type": "residual",
            "layers": [{"type": "conv2d", "filters": 16, "kernel_size": 3, "activation": "relu"}],
        },
        {"type": "global_avgpool"},
        {"type": "dense", "units": 32, "activation": "gelu"},
    ],
}


async def test_a_cnn_layer_spec_trains_with_ddp_and_serves_flat_rows(
    stack: Any, user_token: str, cluster_client: httpx.AsyncClient
) -> None:
    """The digits as 1x8x8 images through a CNN of the spec's layers, on two DDP workers; the
    served model takes the same flat rows of 64 pixels as the MLP's."""
    spec = digits_spec() | {"name": "digits-cnn", "model": CNN}
    spec["training"] = spec["training"] | {"learning_rate": 0.005}
    posted = await cluster_client.post("/workflows", json=spec)
    assert posted.status_code == 202, posted.text
    workflow = await wait_for_workflow(cluster_client, posted.json()["id"])
    assert workflow["status"] == "completed", (workflow["error"], workflow["phases"])
    assert workflow["result"]["test_accuracy"] >= 0.95
    await assert_every_worker_trained(stack, user_token, workflow["id"], ["worker"] * 2)

    rows, labels = raw_test_rows(spec["dataset"], spec["training"]["seed"])
    served_url, bearer = workflow["result"]["served_url"], {"Authorization": f"Bearer {user_token}"}
    async with httpx.AsyncClient(base_url=served_url, headers=bearer) as served:
        answer = await served.post("/predict", json={"rows": rows.tolist()})
    assert answer.status_code == 200, answer.text
    assert (np.array(answer.json()["predictions"]) == labels).mean() >= 0.95
    await assert_the_generated_validation_passes(stack, user_token, workflow["id"])


async def assert_the_generated_validation_passes(stack: Any, token: str, workflow_id: str) -> None:
    """The project's own neural/tests/validation.py rebuilds the model and its data, and
    passes the gates, as a user running it would see."""
    tenant = (await _me(stack, token))["tenant_id"]
    project = Path(stack.artifacts.removeprefix("file://")) / tenant / workflow_id
    script = project / "neural/tests/validation.py"
    completed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, script.name, "--json"],
        cwd=script.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, (completed.stdout, completed.stderr)


async def test_a_workflow_on_a_synthetic_dataset_serves_a_model_of_its_shape(
    stack: Any, user_token: str, cluster_client: httpx.AsyncClient
) -> None:
    """A generated dataset, named by its knobs, goes through all five phases like a bundled
    one: the trainer, the validator and the smoke test regenerate the same rows from it."""
    dataset = "synthetic_classification?rows=1500&features=12&classes=3&seed=4"
    spec = {"name": "synthetic", "dataset": dataset, "model": "auto"}  # the platform's gates
    spec["training"] = {"strategy": "ddp", "seed": 42}
    posted = await cluster_client.post("/workflows", json=spec)
    assert posted.status_code == 202, posted.text
    workflow = await wait_for_workflow(cluster_client, posted.json()["id"])
    assert workflow["status"] == "completed", (workflow["error"], workflow["phases"])

    rows, labels = raw_test_rows(dataset, 42)
    assert rows.shape[1] == 12
    served_url, bearer = workflow["result"]["served_url"], {"Authorization": f"Bearer {user_token}"}
    async with httpx.AsyncClient(base_url=served_url, headers=bearer) as served:
        answer = await served.post("/predict", json={"rows": rows.tolist()})
    assert answer.status_code == 200, answer.text
    assert (np.array(answer.json()["predictions"]) == labels).mean() >= 0.85
    await assert_the_generated_validation_passes(stack, user_token, workflow["id"])


@pytest.mark.parametrize("strategy", ["ddp", "parameter_server"])
async def test_a_regression_workflow_on_diabetes_passes_its_r2_gate_and_serves_values(
    stack: Any, user_token: str, cluster_client: httpx.AsyncClient, strategy: str
) -> None:
    """examples/diabetes-regression.yaml through all five phases: judged by R² and RMSE, not
    accuracy, and served as values in the target's own units (not class labels)."""
    from shared.ml.scores import regression_scores

    spec: dict[str, Any] = yaml.safe_load(
        (ROOT / "examples" / "diabetes-regression.yaml").read_text()
    )
    spec["name"] = f"diabetes-{strategy.replace('_', '-')}"
    spec["training"] = spec["training"] | {"strategy": strategy}
    posted = await cluster_client.post("/workflows", json=spec)
    assert posted.status_code == 202, posted.text
    workflow = await wait_for_workflow(cluster_client, posted.json()["id"])
    assert workflow["status"] == "completed", (workflow["error"], workflow["phases"])
    result = workflow["result"]
    assert result["test_accuracy"] is None
    assert result["test_r2"] >= spec["gates"]["min_r2"]
    assert result["test_rmse"] <= spec["gates"]["max_rmse"]
    validated = workflow["phases"][3]["detail"]["metrics"]
    assert validated["task"] == "regression" and validated["test_r2"] == result["test_r2"]
    roles = ["worker"] * 2 if strategy == "ddp" else ["parameter_server", "worker", "worker"]
    job = await assert_every_worker_trained(stack, user_token, workflow["id"], roles)
    assert job["metrics"]["val_r2"] is not None and job["metrics"]["val_accuracy"] is None

    rows, values = raw_test_rows(spec["dataset"], spec["training"]["seed"])
    bearer = {"Authorization": f"Bearer {user_token}"}
    async with httpx.AsyncClient(base_url=result["served_url"], headers=bearer) as served:
        answer = await served.post("/predict", json={"rows": rows.tolist()})
        info = (await served.get("/")).json()
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert all(isinstance(p["value"], float) for p in predictions)
    served_values = np.array([p["value"] for p in predictions])
    assert regression_scores(served_values, values)["r2"] >= spec["gates"]["min_r2"]
    assert info["task"] == "regression" and info["class_names"] == []

    tenant = (await _me(stack, user_token))["tenant_id"]
    project = Path(stack.artifacts.removeprefix("file://")) / tenant / workflow["id"]
    report = (project / "neural/reports/performance-report.md").read_text()
    assert "## Regression quality" in report and "| `min_r2` | test R² |" in report
    deployment = (project / "neural/docs/DEPLOYMENT.md").read_text()
    assert "diabetes regression model" in deployment and "held-out R²" in deployment
    await assert_the_generated_validation_passes(stack, user_token, workflow["id"])


# The steps inside the phases, each a span of the service or node that took it.
WORKFLOW_STEPS = {
    "nexus-cluster": {"start node processes", "check topology"},
    "nexus-trainer": {"design network", "write design files"},
    "nexus-node": {"load dataset", "join process group", "train", "save model"}
    | {"load model", "measure latency", "sharded inference", "evaluate"},
    "nexus-deployer": {"start model server", "wait for model server ready", "smoke test"},
}


async def assert_one_trace_spans_the_workflow(otlp: OtlpReceiver) -> None:
    """The request's trace continues through every phase (HTTP, NATS, the node processes)
    and shows each step inside them."""
    wanted = {"nexus-cluster", "nexus-memory", "nexus-node", "nexus-trainer"}
    wanted |= {"nexus-validator", "nexus-deployer"}
    wanted_steps = {(service, name) for service, names in WORKFLOW_STEPS.items() for name in names}
    deadline = time.monotonic() + 30  # spans are exported in batches every few seconds
    services: set[str] = set()
    steps: set[tuple[str, str]] = set()
    while time.monotonic() < deadline:
        for spans in otlp.traces().values():
            names = {span.name for span in spans}
            if "POST /workflows" in names and "nexus.phase5.completed process" in names:
                services = {span.service for span in spans}
                steps = {(span.service, span.name) for span in spans}
        if wanted <= services and wanted_steps <= steps:
            return
        await asyncio.sleep(1)
    missing = sorted(wanted_steps - steps)
    raise AssertionError(
        f"no single trace from POST /workflows to phase 5 with every step; saw {services}, "
        f"missing steps {missing}"
    )


async def test_workflow_requested_event_runs_the_whole_workflow(
    stack: Any, user_token: str, cluster_client: httpx.AsyncClient
) -> None:
    spec = digits_spec() | {"name": "from-an-event", "dataset": "iris"}
    spec["training"] = spec["training"] | {"epochs": 40}
    spec["gates"] = spec["gates"] | {"min_accuracy": 0.85}
    event = WorkflowRequested(workflow_id=uuid.uuid4(), spec=spec, auth_token=user_token)
    connection = await nats.connect(stack.nats_url)
    try:
        await connection.jetstream().publish(
            event.subject,
            event.model_dump_json().encode(),
            headers={"Nats-Msg-Id": str(event.event_id)},
        )
    finally:
        await connection.close()

    workflow = await wait_for_workflow(cluster_client, str(event.workflow_id))
    assert workflow["phases"][0]["status"] == "completed", workflow
    assert workflow["status"] == "completed", workflow


async def test_event_with_a_bad_token_records_a_failed_workflow(
    stack: Any, cluster_client: httpx.AsyncClient
) -> None:
    event = WorkflowRequested(workflow_id=uuid.uuid4(), spec=digits_spec(), auth_token="forged")
    connection = await nats.connect(stack.nats_url)
    try:
        await connection.jetstream().publish(event.subject, event.model_dump_json().encode())
    finally:
        await connection.close()

    # The caller proved no tenant: the refusal is recorded, readable by no tenant's API.
    engine = create_async_engine(normalize_database_url(stack.database_url))
    try:
        row = None
        deadline = time.monotonic() + 60
        while row is None and time.monotonic() < deadline:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        text(
                            "SELECT tenant_id, status, error FROM cluster.workflows WHERE id = :id"
                        ),
                        {"id": event.workflow_id},
                    )
                ).first()
            await asyncio.sleep(0.5)
    finally:
        await engine.dispose()
    assert row is not None, "the refused request left no record"
    assert row.status == "failed"
    assert "token" in row.error
    listed = await cluster_client.get(f"/workflows/{event.workflow_id}")
    assert listed.status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"dataset": "imagenet"}, "dataset"),
        ({"name": ""}, "name"),
        ({"training": {"epochs": 0}}, "training.epochs"),
        ({"model": {"hidden_layers": [0]}}, "model.hidden_layers"),
        ({"unexpected": True}, "unexpected"),
    ],
)
async def test_bad_workflow_spec_is_refused_and_nothing_is_created(
    stack: Any, cluster_client: httpx.AsyncClient, change: dict[str, Any], field: str
) -> None:
    before = (await cluster_client.get("/workflows")).json()
    response = await cluster_client.post("/workflows", json=digits_spec() | change)
    assert response.status_code == 422
    assert field in str(response.json()["detail"])
    after = (await cluster_client.get("/workflows")).json()
    assert len(after) == len(before)


async def _me(stack: Any, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.url("auth")) as auth:
        response = await auth.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
        response.raise_for_status()
        me: dict[str, Any] = response.json()
        return me
