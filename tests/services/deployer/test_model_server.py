"""The model server as a real process: real predictions, health, metrics, refused bad rows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from services.deployer.process_manager import SOURCE_ROOT
from services.deployer.service.smoke import HeldOutRows, held_out_rows
from tests.infrastructure import free_port
from tests.services.deployer.conftest import SEED


def start_server(model_dir: Path, port: int, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A model server process; public unless `extra` names its `--tenant`."""
    env = {**os.environ, "PYTHONPATH": str(SOURCE_ROOT)}
    if "--tenant" not in extra:
        extra = ("--public", *extra)
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.deployer.model_server",
                "--model-dir",
                str(model_dir),
                "--port",
                str(port),
                "--model-id",
                "test-model",
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=SOURCE_ROOT,
            env=env,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(digits_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(digits_model_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def regression_server(
    diabetes_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    yield from serve(diabetes_model_dir, tmp_path_factory)


def serve(model_dir: Path, tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("model-server") / "server.log"
    process = start_server(model_dir, port, log, *extra)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            pytest.fail(f"model server not ready: {log.read_text()}")
        yield url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def test_rows() -> HeldOutRows:
    return held_out_rows("digits", SEED, 1000)


def predict(url: str, body: object) -> httpx.Response:
    return httpx.post(f"{url}/predict", json=body, timeout=10)


def test_predicts_real_test_rows_correctly(server: str, test_rows: HeldOutRows) -> None:
    response = predict(server, {"rows": test_rows.rows})
    assert response.status_code == 200
    answer = response.json()
    assert answer["model_id"] == "test-model"
    assert len(answer["predictions"]) == len(test_rows.rows) == 270  # digits' whole test split
    accuracy = sum(
        p == y for p, y in zip(answer["predictions"], test_rows.labels, strict=True)
    ) / len(test_rows.labels)
    assert accuracy >= 0.9
    assert answer["labels"] == [str(p) for p in answer["predictions"]]
    assert all(abs(sum(p) - 1) < 1e-5 and len(p) == 10 for p in answer["probabilities"])


def test_health_readiness_metadata_and_docs(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{server}/readyz").json()["checks"] == {"model": "ok"}
    info = httpx.get(f"{server}/").json()
    assert info["model_id"] == "test-model" and info["dataset"] == "digits"
    assert info["num_features"] == 64 and len(info["class_names"]) == 10
    assert httpx.get(f"{server}/docs").status_code == 200
    openapi = httpx.get(f"{server}/openapi.json").json()
    # Documented, request body included, though the route reads its body itself.
    body = openapi["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["required"] == ["rows"]
    # Measured as it started: each runtime's single row, and the faster one serving.
    assert set(info["runtime_single_row_us"]) == {"torch", "torchscript", "onnxruntime"}
    fastest = min(info["runtime_single_row_us"], key=info["runtime_single_row_us"].__getitem__)
    assert info["runtime"] == fastest and info["precision"] == "float32"
    assert set(info["runtime_differences"]) == {"torchscript", "onnxruntime"}


def test_a_body_over_the_models_limit_is_413_and_the_server_goes_on(server: str) -> None:
    too_many = b'{"rows": [' + b",".join([b"[" + b",".join([b"0.0"] * 64) + b"]"] * 40_000)
    response = httpx.post(
        f"{server}/predict", content=too_many + b"]}", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert predict(server, {"rows": [_row()]}).status_code == 200


def test_metrics_count_predictions_rows_and_latency(server: str, test_rows: HeldOutRows) -> None:
    predict(server, {"rows": test_rows.rows[:3]})
    text = httpx.get(f"{server}/metrics").text
    assert 'nexus_model_predictions_total{model_id="test-model"}' in text
    assert 'nexus_model_rows_total{model_id="test-model"}' in text
    assert "nexus_model_predict_seconds_bucket" in text
    assert "nexus_http_requests_total" in text


def _row() -> list[float]:
    return [0.0] * 64


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"rows": [_row(), [1.0, 2.0]]}, "rows.1", "row 1 has 2 features; the model expects 64"),
        ({"rows": [_row()[:-1] + ["x"]]}, "rows.0.63", "valid number"),
        ({"rows": [_row()[:-1] + [True]]}, "rows.0.63", "valid number"),
        ({"rows": [[*_row()[:-1], 1e300]]}, "rows", "row 0 has a value too large for float32"),
        ({"rows": []}, "rows", "at least 1 item"),
        ({"rows": "not a list"}, "rows", "valid array"),
        ({"rows": [5.0]}, "rows.0", "valid array"),
        ({"rows": [_row()] * 1001}, "rows", "at most 1000 items"),
        ({}, "rows", "Field required"),
        ({"rows": [_row()], "extra": 1}, "extra", "Extra inputs"),
    ],
)
def test_bad_rows_are_422_naming_the_row_and_problem(
    server: str, body: object, field: str, message: str
) -> None:
    response = predict(server, body)
    assert response.status_code == 422
    assert response.json()["error"] == "validation_error"
    problems = response.json()["detail"]
    assert any(p["field"] == field and message in p["message"] for p in problems), problems


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_values_are_refused(server: str, literal: str) -> None:
    # Python's JSON reader accepts these literals (1e400 overflows to infinity); the server
    # must still refuse the value, by row and feature.
    body = '{"rows": [[' + ", ".join(["0"] * 63 + [literal]) + "]]}"
    response = httpx.post(
        f"{server}/predict", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["field"] == "rows.0.63"
    assert "finite" in response.json()["detail"][0]["message"]


def test_a_regression_model_answers_values_in_the_targets_units(regression_server: str) -> None:
    from shared.ml.scores import regression_scores

    rows = held_out_rows("diabetes", SEED, 1000)
    assert rows.task == "regression" and rows.values is not None
    response = predict(regression_server, {"rows": rows.rows})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == {"predictions", "model_id"}
    values = [p["value"] for p in answer["predictions"]]
    assert len(values) == len(rows.rows) == 67 and all(isinstance(v, float) for v in values)
    # Diabetes's own scale (25..346), and the values track the truth.
    assert 25 < sum(values) / len(values) < 346
    assert regression_scores(np.asarray(values), np.asarray(rows.values))["r2"] > 0.3
    info = httpx.get(f"{regression_server}/").json()
    assert info["task"] == "regression" and info["class_names"] == []
    assert info["num_features"] == 10
    bad = predict(regression_server, {"rows": [rows.rows[0][:-1]]})
    assert bad.status_code == 422 and "the model expects 10" in bad.text


async def test_the_smoke_test_judges_a_regression_model_by_r2_and_rmse(
    regression_server: str,
) -> None:
    from services.deployer.service.smoke import QualityGate, SmokeTestFailed, smoke_test

    rows = held_out_rows("diabetes", SEED, 1000)
    async with httpx.AsyncClient(timeout=10) as client:
        checks = await smoke_test(client, regression_server, rows, QualityGate(0.85, 0.3), None)
        assert checks["task"] == "regression"
        assert checks["predict"]["r2"] > 0.3 and checks["predict"]["rows"] == 67
        assert "accuracy" not in checks["predict"]
        example = checks["example"]
        assert example["expected_values"] == rows.values[:2]
        assert all(isinstance(p["value"], float) for p in example["response"]["predictions"])
        with pytest.raises(SmokeTestFailed, match="R² is .* the gate requires 0.990"):
            await smoke_test(client, regression_server, rows, QualityGate(0.85, 0.99), None)
        with pytest.raises(SmokeTestFailed, match="RMSE is .* the gate allows 1"):
            await smoke_test(client, regression_server, rows, QualityGate(0.85, 0.3, 1.0), None)
        # Checked as a model that is not public: one that answers anybody fails.
        with pytest.raises(SmokeTestFailed, match="without credentials answered 200"):
            credentials = {"Authorization": "Bearer x"}
            await smoke_test(client, regression_server, rows, QualityGate(0.85, 0.3), credentials)


def test_judging_held_out_rows_does_not_load_torch_into_the_deployer() -> None:
    """The smoke test runs in the deployer's web process: reading held-out rows and scoring
    a regression model's served values must not import torch there."""
    code = (
        "import sys, numpy as np\n"
        "from services.deployer.service.smoke import held_out_rows\n"
        "from shared.ml.scores import regression_scores\n"
        "rows = held_out_rows('diabetes', 42, 10)\n"
        "regression_scores(np.asarray(rows.values), np.asarray(rows.values))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=SOURCE_ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
