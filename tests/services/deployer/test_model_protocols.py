"""A served model speaks the standard inference protocols beside `POST /predict`: KServe v1
(`instances`) and the Open Inference Protocol (KServe v2), driven here by Triton's own HTTP
client, unchanged; every kind of bad input is a 4xx that says what is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from services.deployer.service.smoke import HeldOutRows, held_out_rows
from tests.services.deployer.conftest import SEED
from tests.services.deployer.test_model_server import serve

MODEL = "model"  # the name a server started without --model-name answers to


@pytest.fixture(scope="module")
def server(digits_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(digits_model_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def rows() -> HeldOutRows:
    return held_out_rows("digits", SEED, 40)


@pytest.fixture(scope="module")
def expected(server: str, rows: HeldOutRows) -> dict[str, Any]:
    answer = httpx.post(f"{server}/predict", json={"rows": rows.rows}, timeout=10)
    assert answer.status_code == 200
    return dict(answer.json())


@pytest.fixture
def client(server: str) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(url=server.removeprefix("http://"))
    yield client
    client.close()


def test_kserve_v1_instances_get_the_same_predictions(
    server: str, rows: HeldOutRows, expected: dict[str, Any]
) -> None:
    answer = httpx.post(f"{server}/v1/models/{MODEL}:predict", json={"instances": rows.rows})
    assert answer.status_code == 200
    assert answer.json() == {"predictions": expected["predictions"]}
    assert httpx.get(f"{server}/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True}


@pytest.mark.parametrize("binary", [True, False])
def test_tritons_client_infers_the_same_classes_and_probabilities(
    client: triton.InferenceServerClient,
    rows: HeldOutRows,
    expected: dict[str, Any],
    binary: bool,
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL)
    metadata = client.get_model_metadata(MODEL)
    assert metadata["inputs"] == [{"name": "rows", "datatype": "FP32", "shape": [-1, 64]}]
    assert [o["name"] for o in metadata["outputs"]] == ["predictions", "probabilities"]

    tensor = triton.InferInput("rows", [len(rows.rows), 64], "FP32")
    tensor.set_data_from_numpy(np.asarray(rows.rows, dtype=np.float32), binary_data=binary)
    result = client.infer(MODEL, [tensor], request_id="r-1")

    assert result.get_response()["id"] == "r-1"
    assert result.as_numpy("predictions").tolist() == expected["predictions"]
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected["probabilities"], atol=1e-6
    )


def test_only_the_outputs_asked_for_are_sent(
    client: triton.InferenceServerClient, rows: HeldOutRows, expected: dict[str, Any]
) -> None:
    tensor = triton.InferInput("rows", [2, 64], "FP64")
    tensor.set_data_from_numpy(np.asarray(rows.rows[:2], dtype=np.float64))
    wanted = [triton.InferRequestedOutput("predictions", binary_data=False)]
    result = client.infer(MODEL, [tensor], outputs=wanted)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["predictions"]
    assert result.as_numpy("predictions").tolist() == expected["predictions"][:2]


def test_tritons_client_reports_the_servers_reason(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("rows", [1, 63], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 63), dtype=np.float32))
    with pytest.raises(InferenceServerException, match=r"shape: \[1, 63\] is not \[n, 64\]"):
        client.infer(MODEL, [tensor])


def _infer(server: str, body: object, model: str = MODEL) -> httpx.Response:
    return httpx.post(f"{server}/v2/models/{model}/infer", json=body, timeout=10)


def _tensor(**changes: Any) -> dict[str, Any]:
    return {"name": "rows", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64} | changes


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": [_tensor(datatype="BYTES")]}, "inputs.0.datatype: 'BYTES' is not a number"),
        ({"inputs": [_tensor(shape=[1, 63])]}, "inputs.0.shape: [1, 63] is not [n, 64]"),
        ({"inputs": [_tensor(shape=[1001, 64])]}, "is not [n, 64] with 1 <= n <= 1000"),
        ({"inputs": [_tensor(data=[0.5] * 63)]}, "inputs.0.data: 63 values, but shape"),
        ({"inputs": [_tensor(data=["x"] * 64)]}, "inputs.0.data: not an array of numbers"),
        ({"inputs": [_tensor(name="pixels")]}, "the model's input is 'rows', not 'pixels'"),
        ({"inputs": [_tensor(data=[float("nan")] * 64)]}, "non-finite value"),
        ({"inputs": [_tensor(), _tensor()]}, "inputs: List should have at most 1 item"),
        ({"inputs": []}, "inputs: List should have at least 1 item"),
        ({}, "inputs: Field required"),
        ({"inputs": [_tensor()], "outputs": [{"name": "logits"}]}, "no output named 'logits'"),
    ],
)
def test_a_bad_infer_request_is_400_saying_what_is_wrong(
    server: str, body: dict[str, Any], message: str
) -> None:
    answer = httpx.post(
        f"{server}/v2/models/{MODEL}/infer",
        content=json.dumps(body, allow_nan=True),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"], answer.json()


def test_binary_data_that_does_not_match_its_declared_size_is_400(server: str) -> None:
    header = json.dumps(
        {"inputs": [_tensor(data=None, parameters={"binary_data_size": 256})]}
    ).encode()
    answer = httpx.post(
        f"{server}/v2/models/{MODEL}/infer",
        content=header + np.zeros(63, dtype="<f4").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert answer.status_code == 400
    assert "binary_data_size: 256 bytes, but the body carries 252" in answer.json()["error"]


def test_another_models_name_is_404_in_both_protocols(server: str) -> None:
    assert _infer(server, {"inputs": [_tensor()]}, model="other").status_code == 404
    assert httpx.get(f"{server}/v2/models/other").status_code == 404
    v1 = httpx.post(f"{server}/v1/models/other:predict", json={"instances": [[0.0] * 64]})
    assert v1.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"instances": [[0.0] * 63]}, "rows.0"),
        ({"instances": []}, "instances"),
        ({"rows": [[0.0] * 64]}, "rows"),
        ({"instances": [["a"] * 64]}, "instances.0.0"),
    ],
)
def test_a_bad_v1_body_is_422_naming_the_field(server: str, body: object, field: str) -> None:
    answer = httpx.post(f"{server}/v1/models/{MODEL}:predict", json=body)
    assert answer.status_code == 422
    assert field in [problem["field"] for problem in answer.json()["detail"]], answer.json()


def test_an_oversized_body_is_413_in_every_protocol(server: str) -> None:
    row = b"[" + b",".join([b"0.0"] * 64) + b"]"
    rows = b",".join([row] * 40_000)
    for path, body in [
        (f"/v1/models/{MODEL}:predict", b'{"instances": [' + rows + b"]}"),
        (f"/v2/models/{MODEL}/infer", b'{"inputs": [{"data": [' + rows + b"]}]}"),
    ]:
        answer = httpx.post(f"{server}{path}", content=body, timeout=30)
        assert answer.status_code == 413, path
