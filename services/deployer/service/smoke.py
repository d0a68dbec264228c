"""The phase 5 gate: a new model server answers health, readiness, its docs and real
predictions, refuses a malformed row, and is as accurate on held-out rows as the gate asks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

# The example in DEPLOYMENT.md and `neural/serve-api`: a couple of real rows stays readable.
EXAMPLE_ROWS = 2


class SmokeTestFailed(Exception):
    pass


@dataclass(frozen=True)
class HeldOutRows:
    """Held-out rows as a client would send them: raw feature values, not normalized."""

    dataset: str
    rows: list[list[float]]
    labels: list[int]
    class_names: list[str]


def held_out_rows(dataset: str, seed: int, limit: int) -> HeldOutRows:
    """The first `limit` rows of the test split the model was validated on, as the raw values
    a client sends (blocking: call it in a thread)."""
    from shared.ml.data import load_splits

    splits = load_splits(dataset, seed=seed)
    return HeldOutRows(
        dataset=dataset,
        rows=splits.x_test_raw[:limit].tolist(),
        labels=splits.y_test[:limit].tolist(),
        class_names=list(splits.class_names),
    )


async def smoke_test(
    client: httpx.AsyncClient, url: str, test_rows: HeldOutRows, min_accuracy: float
) -> dict[str, Any]:
    """Run every check against the server at `url`; raise SmokeTestFailed naming the first
    that fails. Returns what was measured (stored with the deployment)."""
    checks: dict[str, Any] = {"dataset": test_rows.dataset, "class_names": test_rows.class_names}
    for path, name in (("/healthz", "health"), ("/readyz", "ready"), ("/docs", "docs")):
        response = await _get(client, f"{url}{path}")
        if response.status_code != 200:
            raise SmokeTestFailed(f"GET {path} answered {response.status_code}")
        checks[name] = "ok"
    openapi = (await _get(client, f"{url}/openapi.json")).json()
    if "/predict" not in openapi.get("paths", {}):
        raise SmokeTestFailed("the served API documents no /predict route")

    started = time.perf_counter()
    response = await _post(client, f"{url}/predict", {"rows": test_rows.rows})
    predict_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SmokeTestFailed(f"POST /predict answered {response.status_code}: {response.text}")
    answer = response.json()
    predictions = answer.get("predictions", [])
    if len(predictions) != len(test_rows.rows):
        raise SmokeTestFailed(
            f"POST /predict returned {len(predictions)} predictions for {len(test_rows.rows)} rows"
        )
    if answer.get("labels") != [test_rows.class_names[p] for p in predictions]:
        raise SmokeTestFailed("POST /predict labels do not match its predicted classes")
    correct = sum(int(p == y) for p, y in zip(predictions, test_rows.labels, strict=True))
    accuracy = correct / len(predictions)
    checks["predict"] = {
        "rows": len(predictions),
        "correct": correct,
        "accuracy": accuracy,
        "min_accuracy": min_accuracy,
        "milliseconds": round(predict_ms, 2),
    }
    if accuracy < min_accuracy:
        raise SmokeTestFailed(
            f"served model is {accuracy:.3f} accurate on {len(predictions)} held-out "
            f"{test_rows.dataset} rows; the gate requires {min_accuracy:.3f}"
        )

    # A row of the wrong width must be refused as bad input, not crash the server.
    bad = await _post(client, f"{url}/predict", {"rows": [test_rows.rows[0][:-1]]})
    if bad.status_code != 422:
        raise SmokeTestFailed(f"a row of the wrong width answered {bad.status_code}, not 422")
    checks["refuses_bad_rows"] = "ok"

    example_rows = test_rows.rows[:EXAMPLE_ROWS]
    checks["example"] = {
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
    return checks


async def _get(client: httpx.AsyncClient, url: str) -> httpx.Response:
    try:
        return await client.get(url)
    except httpx.HTTPError as exc:
        raise SmokeTestFailed(f"GET {url} failed: {exc!r}") from exc


async def _post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
    try:
        return await client.post(url, json=body)
    except httpx.HTTPError as exc:
        raise SmokeTestFailed(f"POST {url} failed: {exc!r}") from exc
