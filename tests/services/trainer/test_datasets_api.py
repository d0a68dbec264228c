"""The trainer's dataset routes against a real Postgres and artifact store: each format is
uploaded and described, each kind of bad file is refused with where and stores nothing, sizes
and quotas hold without filling the disk, and one tenant never sees another's datasets."""

from __future__ import annotations

import io
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI

from services.trainer.app import create_app
from services.trainer.settings import TrainerSettings
from tests.support import as_service, running

MAX_BYTES = 300_000
QUOTA_BYTES = 500_000


def csv_text(rows: int = 60, classes: int = 3) -> str:
    lines = [f"{i * 0.25},{(i * 7) % 11},k{i % classes}" for i in range(rows)]
    return "width,height,kind\n" + "\n".join(lines) + "\n"


@pytest.fixture
async def app(service_env: dict[str, str], tmp_path: Path) -> AsyncIterator[FastAPI]:
    settings = TrainerSettings(  # type: ignore[call-arg]
        dataset_max_bytes=MAX_BYTES,
        tenant_dataset_quota_bytes=QUOTA_BYTES,
        dataset_url_prefixes=[f"file://{tmp_path}/shared/"],
    )
    application = create_app(settings)
    async with running(application) as client:
        application.state.test_client = client
        yield application


@pytest.fixture
def client(app: FastAPI, internal_token: str, tenant_id: str) -> httpx.AsyncClient:
    client: httpx.AsyncClient = app.state.test_client
    client.headers.update(as_service(internal_token, tenant_id))
    return client


def stored_files(app: FastAPI, tenant_id: str) -> list[str]:
    store = app.state.context.artifacts
    return store.list_files(store.url(tenant_id, "datasets"))


async def upload(
    client: httpx.AsyncClient, content: bytes, filename: str = "data.csv", **params: Any
) -> httpx.Response:
    files = {"file": (filename, content, "application/octet-stream")}
    return await client.post("/datasets", files=files, params=params)


async def test_a_csv_upload_is_described_listed_shown_and_deleted(
    app: FastAPI, client: httpx.AsyncClient, tenant_id: str
) -> None:
    content = csv_text().encode()
    response = await upload(client, content, "plants.csv")
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["name"] == "plants" and dataset["format"] == "csv"
    assert dataset["source"] == "upload" and dataset["size_bytes"] == len(content)
    assert dataset["sha256"] == __import__("hashlib").sha256(content).hexdigest()
    schema = dataset["schema"]
    assert schema["features"] == ["width", "height"] and schema["target"] == "kind"
    assert (schema["task"], schema["rows"]) == ("classification", 60)
    assert (schema["class_names"], schema["class_counts"]) == (["k0", "k1", "k2"], [20, 20, 20])
    assert schema["preview"][1] == {"width": 0.25, "height": 7.0, "kind": "k1"}
    assert sorted(stored_files(app, tenant_id)) == [
        f"{dataset['id']}/data",
        f"{dataset['id']}/schema.json",
    ]

    shown = await client.get(f"/datasets/{dataset['id']}")
    assert shown.status_code == 200 and shown.json() == dataset
    listed = (await client.get("/datasets")).json()
    assert [d["id"] for d in listed["uploaded"]] == [dataset["id"]]
    assert listed["uploaded"][0]["rows"] == 60 and "digits" in {
        d["name"] for d in listed["datasets"]
    }

    assert (await client.delete(f"/datasets/{dataset['id']}")).status_code == 204
    assert (await client.get(f"/datasets/{dataset['id']}")).status_code == 404
    assert stored_files(app, tenant_id) == []


async def test_parquet_and_image_npz_uploads_take_their_schema_from_the_file(
    client: httpx.AsyncClient,
) -> None:
    table = pa.table({"a": [float(i) for i in range(40)], "y": [i * 1.5 + 0.1 for i in range(40)]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    response = await upload(client, buffer.getvalue(), "growth.parquet")
    assert response.status_code == 201, response.text
    assert response.json()["schema"]["task"] == "regression"

    images = io.BytesIO()
    np.savez(images, x=np.random.default_rng(0).random((40, 3, 4, 4)), y=np.arange(40) % 2)
    response = await upload(client, images.getvalue(), "tiles.npz", name="tiles")
    assert response.status_code == 201, response.text
    schema = response.json()["schema"]
    assert schema["input_shape"] == [3, 4, 4] and len(schema["features"]) == 48


async def test_options_override_what_is_inferred(client: httpx.AsyncClient) -> None:
    response = await upload(
        client,
        csv_text().encode(),
        "any.txt",
        format="csv",
        target="height",
        task="regression",
        features="width",
        name="override",
    )
    assert response.status_code == 201, response.text
    schema = response.json()["schema"]
    assert (schema["target"], schema["task"], schema["features"]) == (
        "height",
        "regression",
        ["width"],
    )


@pytest.mark.parametrize(
    ("content", "params", "message", "location"),
    [
        (csv_text().replace(",", ";").encode(), {}, "delimiter=';'", {"row": 0}),
        (
            csv_text().encode(),
            {"target": "colour"},
            "no target column 'colour'",
            {"column": "colour"},
        ),
        (
            (csv_text() + "wide,3,k0\n").encode(),
            {},
            "'width' is not numeric",
            {"row": 61, "column": "width", "value": "wide"},
        ),
        (
            (csv_text() + "inf,3,k0\n").encode(),
            {},
            "1 missing or non-finite",
            {"row": 61, "column": "width", "count": 1},
        ),
        (
            (csv_text() + "1,2,rare\n").encode(),
            {},
            "too few rows per class",
            {"column": "kind", "classes": ["rare"]},
        ),
        (b"\x89PNG not a table", {"format": "parquet"}, "not a readable Parquet file", None),
        (b"plain text", {"format": "npz"}, "not a readable NPZ file", None),
    ],
    ids=["delimiter", "target", "non-numeric", "non-finite", "rows-per-class", "parquet", "npz"],
)
async def test_a_bad_file_gets_a_422_saying_where_and_stores_nothing(
    app: FastAPI,
    client: httpx.AsyncClient,
    tenant_id: str,
    content: bytes,
    params: dict[str, str],
    message: str,
    location: dict[str, Any] | None,
) -> None:
    response = await upload(client, content, **params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "invalid_dataset"
    assert message in body["detail"]["message"]
    assert body["detail"].get("location") == location
    assert (await client.get("/datasets")).json()["uploaded"] == []
    assert stored_files(app, tenant_id) == []


@pytest.mark.parametrize(
    ("request_kwargs", "status", "needle"),
    [
        ({"params": {"colour": "red"}, "files": {"file": ("a.csv", b"x")}}, 422, "colour"),
        ({"params": {"task": "clustering"}, "files": {"file": ("a.csv", b"x")}}, 422, "task"),
        ({"params": {"delimiter": ";;"}, "files": {"file": ("a.csv", b"x")}}, 422, "delimiter"),
        ({"files": {"file": ("notes.txt", csv_text().encode())}}, 422, "cannot tell the format"),
        ({"files": {"upload": ("a.csv", csv_text().encode())}}, 422, "unexpected form field"),
        ({"content": b"a,b\n1,2\n", "headers": {"content-type": "text/csv"}}, 415, "multipart"),
        ({"json": {"path": "/etc/passwd"}}, 422, "url"),
    ],
    ids=["unknown-option", "task", "delimiter", "format", "field", "media-type", "json"],
)
async def test_bad_requests_are_refused_clearly(
    app: FastAPI,
    client: httpx.AsyncClient,
    tenant_id: str,
    request_kwargs: dict[str, Any],
    status: int,
    needle: str,
) -> None:
    response = await client.post("/datasets", **request_kwargs)
    assert response.status_code == status, response.text
    assert needle in response.text
    assert stored_files(app, tenant_id) == []


async def test_an_oversized_upload_is_refused_before_it_fills_the_disk(
    app: FastAPI, client: httpx.AsyncClient, tenant_id: str
) -> None:
    big = csv_text(rows=40_000).encode()  # about 600 KB, twice the limit
    declared = await upload(client, big)
    assert declared.status_code == 413 and "300000-byte limit" in declared.text

    # A chunked body declares no length: it is counted as it arrives and cut off.
    boundary = secrets.token_hex(8)
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    ).encode()
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield head
        for start in range(0, len(big), 64 * 1024):
            sent += 64 * 1024
            yield big[start : start + 64 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    streamed = await client.post("/datasets", content=body(), headers=headers)
    assert streamed.status_code == 413, streamed.text
    assert sent <= MAX_BYTES + 64 * 1024  # it stopped reading at the limit
    assert stored_files(app, tenant_id) == []


async def test_the_tenant_quota_counts_every_stored_file(client: httpx.AsyncClient) -> None:
    content = csv_text(rows=16_000).encode()  # about 195 KB: two fit in the 500 KB quota
    assert len(content) < MAX_BYTES and 2 * len(content) <= QUOTA_BYTES < 3 * len(content)
    for _ in range(2):
        assert (await upload(client, content)).status_code == 201
    third = await upload(client, content)
    assert third.status_code == 413 and "quota" in third.text


async def test_datasets_import_only_from_the_configured_prefixes(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "plants.csv").write_text(csv_text())
    (tmp_path / "private.csv").write_text(csv_text())
    imported = await client.post("/datasets", json={"url": f"file://{shared}/plants.csv"})
    assert imported.status_code == 201, imported.text
    assert imported.json()["source"] == f"file://{shared}/plants.csv"
    assert imported.json()["name"] == "plants"
    for url in (f"file://{tmp_path}/private.csv", f"file://{shared}/../private.csv", "/etc/passwd"):
        refused = await client.post("/datasets", json={"url": url})
        assert refused.status_code == 422 and "NEXUS_DATASET_URL_PREFIXES" in refused.text
    missing = await client.post("/datasets", json={"url": f"file://{shared}/absent.csv"})
    assert missing.status_code == 422 and "cannot read" in missing.text


async def test_a_tenant_never_sees_another_tenants_datasets(
    client: httpx.AsyncClient, internal_token: str
) -> None:
    dataset = (await upload(client, csv_text().encode())).json()
    other = as_service(internal_token, f"t-{secrets.token_hex(6)}")
    assert (await client.get("/datasets", headers=other)).json()["uploaded"] == []
    for method in ("get", "delete"):
        response = await client.request(method, f"/datasets/{dataset['id']}", headers=other)
        assert response.status_code == 404
    assert (await client.get(f"/datasets/{uuid.uuid4()}")).status_code == 404
    assert (await client.get(f"/datasets/{dataset['id']}")).status_code == 200
