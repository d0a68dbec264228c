"""A tenant's own data through the whole platform: files uploaded to the trainer over HTTP, a
workflow that names them by id, five phases, and a served model that answers on their rows."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import nats
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.datasets import load_diabetes, load_digits, load_wine

from shared.contracts import WorkflowRequested
from shared.ml.evaluate import regression_scores
from tests.e2e.conftest import register_user, service_client
from tests.e2e.test_digits_workflow import (
    ROOT,
    assert_the_generated_validation_passes,
    raw_test_rows,
    wait_for_workflow,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
async def trainer_client(stack: Any, user_token: str) -> AsyncIterator[httpx.AsyncClient]:
    async with service_client(stack, user_token, "trainer", timeout=60) as client:
        yield client


async def upload(client: httpx.AsyncClient, filename: str, content: bytes) -> dict[str, Any]:
    response = await client.post("/datasets", files={"file": (filename, content)})
    assert response.status_code == 201, response.text
    dataset: dict[str, Any] = response.json()
    return dataset


def digit_images() -> bytes:
    """The digits as 8x8 grey images with their labels: a small image set, NPZ as users send."""
    digits = load_digits()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=digits.images.astype(np.float32), labels=digits.target)
    return buffer.getvalue()


async def project_dir(stack: Any, token: str, workflow_id: str) -> Path:
    async with httpx.AsyncClient(base_url=stack.url("auth")) as auth:
        me = await auth.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    return Path(stack.artifacts.removeprefix("file://")) / me.json()["tenant_id"] / workflow_id


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def served_accuracy(
    workflow: dict[str, Any], location: str, token: str, seed: int = 42
) -> float:
    rows, labels = raw_test_rows(location, seed)
    served_url = workflow["result"]["served_url"]
    async with httpx.AsyncClient(base_url=served_url, headers=bearer(token)) as served:
        answer = await served.post("/predict", json={"rows": rows.tolist()})
    assert answer.status_code == 200, answer.text
    return float((np.array(answer.json()["predictions"]) == labels).mean())


async def test_an_uploaded_image_npz_trains_a_cnn_with_ddp_and_is_served(
    stack: Any,
    user_token: str,
    cluster_client: httpx.AsyncClient,
    trainer_client: httpx.AsyncClient,
) -> None:
    dataset = await upload(trainer_client, "digit-images.npz", digit_images())
    assert dataset["schema"]["input_shape"] == [1, 8, 8]
    spec = {"name": "uploaded-images", "dataset": dataset["id"], "model": "auto"}
    spec["training"] = {"strategy": "ddp"}
    posted = await cluster_client.post("/workflows", json=spec)
    assert posted.status_code == 202, posted.text
    workflow = await wait_for_workflow(cluster_client, posted.json()["id"])
    assert workflow["status"] == "completed", (workflow["error"], workflow["phases"])
    # The project records where the data is, how its rows are laid out, and a CNN for them.
    configs = await project_dir(stack, user_token, workflow["id"]) / "neural" / "configs"
    recorded = json.loads((configs / "dataset.json").read_text())
    assert recorded["name"] == dataset["location"] and recorded["sha256"] == dataset["sha256"]
    architecture = json.loads((configs / "architecture.json").read_text())
    assert architecture["input_shape"] == [1, 8, 8]
    assert "conv2d" in {layer["type"] for layer in architecture["layers"]}
    assert await served_accuracy(workflow, dataset["location"], user_token) >= 0.9
    await assert_the_generated_validation_passes(stack, user_token, workflow["id"])

    # While nothing trains on it any more, the dataset can go.
    assert (await trainer_client.delete(f"/datasets/{dataset['id']}")).status_code == 204


async def test_an_uploaded_csv_classifier_and_parquet_regressor_train_through_the_api(
    cluster_client: httpx.AsyncClient, trainer_client: httpx.AsyncClient, user_token: str
) -> None:
    wine = load_wine()
    header = ",".join([*wine.feature_names, "cultivar"])
    lines = [
        ",".join([*map(str, row), f"cultivar-{label}"])  # labels as text
        for row, label in zip(wine.data.tolist(), wine.target.tolist(), strict=True)
    ]
    content = "\n".join([header, *lines]).encode()
    csv = await upload(trainer_client, "wine.csv", content)
    assert csv["schema"]["target"] == "cultivar"  # the last column
    assert csv["schema"]["class_names"] == ["cultivar-0", "cultivar-1", "cultivar-2"]
    diabetes = load_diabetes()
    columns = {name: diabetes.data[:, i] for i, name in enumerate(diabetes.feature_names)}
    buffer = io.BytesIO()
    pq.write_table(pa.table({**columns, "progression": diabetes.target}), buffer)
    response = await trainer_client.post(
        "/datasets",
        files={"file": ("diabetes.parquet", buffer.getvalue())},
        params={"target": "progression"},
    )
    assert response.status_code == 201, response.text
    parquet = response.json()
    assert parquet["schema"]["task"] == "regression"  # 214 distinct values: a quantity

    classifier = {"name": "uploaded-csv", "dataset": csv["id"]}
    classifier["training"] = {"strategy": "ddp", "epochs": 60, "learning_rate": 0.01}
    regressor = yaml.safe_load((ROOT / "examples" / "diabetes-regression.yaml").read_text())
    regressor |= {"name": "uploaded-parquet", "dataset": parquet["id"]}
    posted = []
    for spec in (classifier, regressor):
        response = await cluster_client.post("/workflows", json=spec)
        assert response.status_code == 202, response.text
        posted.append(response.json()["id"])
    first, second = await asyncio.gather(*(wait_for_workflow(cluster_client, w) for w in posted))
    for workflow in (first, second):
        assert workflow["status"] == "completed", (workflow["error"], workflow["phases"])
    assert await served_accuracy(first, csv["location"], user_token) >= 0.85

    rows, values = raw_test_rows(parquet["location"], regressor["training"]["seed"])
    served_url = second["result"]["served_url"]
    async with httpx.AsyncClient(base_url=served_url, headers=bearer(user_token)) as served:
        answer = await served.post("/predict", json={"rows": rows.tolist()})
    assert answer.status_code == 200, answer.text
    predicted = np.array([p["value"] for p in answer.json()["predictions"]])
    assert regression_scores(predicted, values)["r2"] >= regressor["gates"]["min_r2"]


async def test_a_spec_is_checked_against_the_uploaded_data_and_the_tenant(
    stack: Any, cluster_client: httpx.AsyncClient, trainer_client: httpx.AsyncClient
) -> None:
    dataset = await upload(trainer_client, "digit-images.npz", digit_images())
    layers = [{"type": "dense", "units": 16}, {"type": "conv2d", "filters": 4}]
    spec = {"name": "mismatch", "dataset": dataset["id"]}
    spec["model"] = {"type": "layers", "layers": layers, "input_shape": [64]}
    refused = await cluster_client.post("/workflows", json=spec)
    assert refused.status_code == 422, refused.text
    assert "layers[1] conv2d expects" in refused.text

    # Another tenant cannot train on it, by id or by its location.
    headers = {"Authorization": f"Bearer {await register_user(stack)}"}
    for reference in (dataset["id"], dataset["location"]):
        foreign = {"name": "foreign", "dataset": reference}
        answer = await cluster_client.post("/workflows", json=foreign, headers=headers)
        assert answer.status_code == 422, answer.text
        assert "no dataset" in answer.text
    listed = await cluster_client.get("/workflows", headers=headers)
    assert listed.json() == []


async def test_a_categorical_column_is_embedded_and_trains_on_a_parameter_server(
    cluster_client: httpx.AsyncClient, trainer_client: httpx.AsyncClient, user_token: str
) -> None:
    """A text column declared categorical is stored as codes; `model: auto` embeds it, and
    the served model takes the codes in the dataset's category order."""
    rng = np.random.default_rng(3)
    shades = ["red", "green", "blue", "black", "white", "grey"]
    lines = ["size,shade,weight,kind"]
    for _ in range(900):
        shade, size = shades[rng.integers(6)], rng.normal()
        warm = shade in ("red", "green", "white")
        lines.append(f"{size:.4f},{shade},{rng.normal():.4f},{'warm' if warm else 'cool'}")
    response = await trainer_client.post(
        "/datasets",
        files={"file": ("shades.csv", "\n".join(lines).encode())},
        params={"categorical": "shade"},
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["schema"]["categories"] == {"shade": sorted(shades)}

    plain = {"name": "shades-mlp", "dataset": dataset["id"], "model": {"type": "mlp"}}
    refused = await cluster_client.post("/workflows", json=plain)
    assert refused.status_code == 422 and "cannot embed" in refused.text

    spec = {"name": "shades", "dataset": dataset["id"], "model": "auto"}
    spec["training"] = {"strategy": "parameter_server"}
    posted = await cluster_client.post("/workflows", json=spec)
    assert posted.status_code == 202, posted.text
    workflow = await wait_for_workflow(cluster_client, posted.json()["id"])
    assert workflow["status"] == "completed", (workflow["error"], workflow["phases"])
    assert await served_accuracy(workflow, dataset["location"], user_token) >= 0.95


async def test_an_event_naming_a_dataset_is_resolved_for_its_own_tenant(
    stack: Any, cluster_client: httpx.AsyncClient, trainer_client: httpx.AsyncClient
) -> None:
    """A workflow requested by event gets the same lookup: another tenant's dataset is
    refused, and the refusal is recorded for the requester to read."""
    dataset = await upload(trainer_client, "digit-images.npz", digit_images())
    other_token = await register_user(stack)
    spec = {"name": "foreign-by-event", "dataset": dataset["id"]}
    event = WorkflowRequested(workflow_id=uuid.uuid4(), spec=spec, auth_token=other_token)
    connection = await nats.connect(stack.nats_url)
    try:
        await connection.jetstream().publish(event.subject, event.model_dump_json().encode())
    finally:
        await connection.close()
    async with service_client(stack, other_token, "cluster") as other:
        workflow = await wait_for_workflow(other, str(event.workflow_id), timeout=60)
    assert workflow["status"] == "failed" and "no dataset" in workflow["error"], workflow
