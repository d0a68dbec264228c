"""The phase 5 gate: a new model server answers health, readiness, its docs and real
predictions, refuses a malformed row, and is as good on held-out rows as the gate asks
(accuracy for a classifier; R², and RMSE when the spec bounds it, for a regression model)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

# The example in DEPLOYMENT.md and `neural/serve-api`: a couple of real rows stays readable.
EXAMPLE_ROWS = 2
# Single-row requests timed one after another for the served p99 (about 0.1 s here).
LATENCY_REQUESTS = 50
LATENCY_ROUNDS = 2
SERVING_FIELDS = ("runtime", "precision", "runtime_single_row_us", "runtime_differences")


class SmokeTestFailed(Exception):
    pass


@dataclass(frozen=True)
class HeldOutRows:
    """Held-out rows as a client would send them: raw feature values, not normalized."""

    dataset: str
    rows: list[list[float]]
    labels: list[int]  # regression: the true values instead (`values`), and no labels
    class_names: list[str]
    task: str = "classification"
    values: list[float] | None = None


@dataclass(frozen=True)
class QualityGate:
    """What the served model must reach on the held-out rows (the spec's phase 4 gates)."""

    min_accuracy: float
    min_r2: float
    max_rmse: float | None = None
    # Single-row requests over HTTP, as a client sends them (None: not measured).
    max_p99_latency_ms: float | None = None


def held_out_rows(dataset: str, seed: int, limit: int) -> HeldOutRows:
    """The first `limit` rows of the test split the model was validated on, as the raw values
    a client sends (blocking: call it in a thread)."""
    from shared.ml.data import load_splits

    splits = load_splits(dataset, seed=seed)
    if splits.task == "regression":
        return HeldOutRows(
            dataset=dataset,
            rows=splits.x_test_raw[:limit].tolist(),
            labels=[],
            class_names=[],
            task="regression",
            values=splits.y_test[:limit].astype(float).tolist(),
        )
    return HeldOutRows(
        dataset=dataset,
        rows=splits.x_test_raw[:limit].tolist(),
        labels=splits.y_test[:limit].tolist(),
        class_names=list(splits.class_names),
    )


async def smoke_test(
    client: httpx.AsyncClient,
    url: str,
    test_rows: HeldOutRows,
    gate: QualityGate,
    credentials: dict[str, str] | None,
) -> dict[str, Any]:
    """Run every check against the server at `url`, sending `credentials` (headers; None
    for a public model); raise SmokeTestFailed naming the first that fails. Returns what
    was measured (stored with the deployment)."""
    checks: dict[str, Any] = {
        "dataset": test_rows.dataset,
        "task": test_rows.task,
        "class_names": test_rows.class_names,
    }
    for path, name in (("/healthz", "health"), ("/readyz", "ready"), ("/docs", "docs")):
        response = await _get(client, f"{url}{path}")
        if response.status_code != 200:
            raise SmokeTestFailed(f"GET {path} answered {response.status_code}")
        checks[name] = "ok"
    openapi = (await _get(client, f"{url}/openapi.json")).json()
    if "/predict" not in openapi.get("paths", {}):
        raise SmokeTestFailed("the served API documents no /predict route")

    if credentials is not None:
        # A model that is not public answers nobody without a credential.
        anonymous = await _post(client, f"{url}/predict", {"rows": test_rows.rows[:1]})
        if anonymous.status_code != 401:
            raise SmokeTestFailed(f"a request without credentials answered {anonymous.status_code}")
        checks["refuses_anonymous"] = "ok"

    started = time.perf_counter()
    response = await _post(client, f"{url}/predict", {"rows": test_rows.rows}, credentials)
    predict_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SmokeTestFailed(f"POST /predict answered {response.status_code}: {response.text}")
    answer = response.json()
    predictions = answer.get("predictions", [])
    if len(predictions) != len(test_rows.rows):
        raise SmokeTestFailed(
            f"POST /predict returned {len(predictions)} predictions for {len(test_rows.rows)} rows"
        )
    if test_rows.task == "regression":
        quality = _regression_quality(test_rows, predictions, gate)
    else:
        quality = _accuracy(test_rows, answer, gate.min_accuracy)
    checks["predict"] = {**quality, "milliseconds": round(predict_ms, 2)}

    # A row of the wrong width must be refused as bad input, not crash the server.
    bad = await _post(client, f"{url}/predict", {"rows": [test_rows.rows[0][:-1]]}, credentials)
    if bad.status_code != 422:
        raise SmokeTestFailed(f"a row of the wrong width answered {bad.status_code}, not 422")
    checks["refuses_bad_rows"] = "ok"
    checks["example"] = _example(test_rows, answer)

    served = await _get(client, f"{url}/", credentials)
    if served.status_code != 200:
        raise SmokeTestFailed(f"GET / answered {served.status_code}: {served.text}")
    checks["serving"] = {name: served.json().get(name) for name in SERVING_FIELDS}
    if gate.max_p99_latency_ms is not None:
        checks["latency"] = await _served_latency(
            client, f"{url}/predict", test_rows.rows[0], credentials, gate.max_p99_latency_ms
        )
    return checks


async def _served_latency(
    client: httpx.AsyncClient,
    url: str,
    row: list[float],
    credentials: dict[str, str] | None,
    max_p99_ms: float,
) -> dict[str, Any]:
    """Phase 4's latency gate, through the serving path: single-row requests over HTTP. A
    round over the gate is measured once more, and the version fails only if that one is
    too: a moment of load elsewhere on the host is not the model's slowness."""
    rounds = []
    for _ in range(LATENCY_ROUNDS):
        samples = []
        for _ in range(LATENCY_REQUESTS):
            started = time.perf_counter()
            response = await _post(client, url, {"rows": [row]}, credentials)
            samples.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SmokeTestFailed(f"a single-row request answered {response.status_code}")
        p50, p99 = (float(np.percentile(samples, q)) for q in (50, 99))
        rounds.append({"p50_ms": round(p50, 3), "p99_ms": round(p99, 3)})
        if p99 <= max_p99_ms:
            return {**rounds[-1], "requests": LATENCY_REQUESTS, "max_p99_ms": max_p99_ms}
    measured = " and ".join(f"{r['p99_ms']:.1f} ms" for r in rounds)
    raise SmokeTestFailed(
        f"served p99 latency is {measured} in {len(rounds)} rounds of {LATENCY_REQUESTS} "
        f"single-row requests; the gate allows {max_p99_ms:g} ms"
    )


def _regression_quality(
    test_rows: HeldOutRows, predictions: list[Any], gate: QualityGate
) -> dict[str, Any]:
    """R², RMSE and MAE of the served values against the rows' true values."""
    from shared.ml.scores import regression_scores

    assert test_rows.values is not None
    served = [p.get("value") if isinstance(p, dict) else None for p in predictions]
    if not all(isinstance(v, float) for v in served):
        raise SmokeTestFailed("POST /predict answered a regression model without float values")
    scores = regression_scores(np.asarray(served), np.asarray(test_rows.values))
    measured = {"rows": len(served), **scores, "min_r2": gate.min_r2, "max_rmse": gate.max_rmse}
    if scores["r2"] < gate.min_r2:
        raise SmokeTestFailed(
            f"served model's R² is {scores['r2']:.3f} on {len(served)} held-out "
            f"{test_rows.dataset} rows; the gate requires {gate.min_r2:.3f}"
        )
    if gate.max_rmse is not None and scores["rmse"] > gate.max_rmse:
        raise SmokeTestFailed(
            f"served model's RMSE is {scores['rmse']:.4g} on {len(served)} held-out "
            f"{test_rows.dataset} rows; the gate allows {gate.max_rmse:.4g}"
        )
    return measured


def _accuracy(
    test_rows: HeldOutRows, answer: dict[str, Any], min_accuracy: float
) -> dict[str, Any]:
    predictions = answer["predictions"]
    if answer.get("labels") != [test_rows.class_names[p] for p in predictions]:
        raise SmokeTestFailed("POST /predict labels do not match its predicted classes")
    correct = sum(int(p == y) for p, y in zip(predictions, test_rows.labels, strict=True))
    accuracy = correct / len(predictions)
    if accuracy < min_accuracy:
        raise SmokeTestFailed(
            f"served model is {accuracy:.3f} accurate on {len(predictions)} held-out "
            f"{test_rows.dataset} rows; the gate requires {min_accuracy:.3f}"
        )
    return {
        "rows": len(predictions),
        "correct": correct,
        "accuracy": accuracy,
        "min_accuracy": min_accuracy,
    }


def _example(test_rows: HeldOutRows, answer: dict[str, Any]) -> dict[str, Any]:
    """A couple of held-out rows, what the server answered for them and the truth."""
    example_rows = test_rows.rows[:EXAMPLE_ROWS]
    predictions = answer["predictions"]
    if test_rows.task == "regression":
        assert test_rows.values is not None
        return {
            "request": {"rows": example_rows},
            "response": {
                "predictions": [
                    {"value": round(p["value"], 4)} for p in predictions[:EXAMPLE_ROWS]
                ],
                "model_id": answer.get("model_id"),
            },
            "expected_values": test_rows.values[:EXAMPLE_ROWS],
        }
    return {
        "request": {"rows": example_rows},
        "response": {
            "predictions": predictions[:EXAMPLE_ROWS],
            "labels": answer["labels"][:EXAMPLE_ROWS],
            "probabilities": [
                [round(p, 4) for p in row] for row in answer["probabilities"][:EXAMPLE_ROWS]
            ],
            "model_id": answer.get("model_id"),
        },
        "expected_labels": [test_rows.class_names[y] for y in test_rows.labels[:EXAMPLE_ROWS]],
    }


async def _get(
    client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    try:
        return await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        raise SmokeTestFailed(f"GET {url} failed: {exc!r}") from exc


async def _post(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    try:
        return await client.post(url, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise SmokeTestFailed(f"POST {url} failed: {exc!r}") from exc
