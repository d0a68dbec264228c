"""How much does serving a model over HTTP cost on top of running it?

Trains the digits MLP (a few seconds), saves it, starts the real model server
(`python -m services.deployer.model_server`) and measures single-row `POST /predict`
round trips from a keep-alive client, against the plain baseline measured in the same
run: the same model's forward pass in this process through `Predictor.predict`.

    .venv/bin/python -m bench.serving_latency [--requests 500]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from shared.ml.architecture import design_architecture
from shared.ml.checkpoint import save_model
from shared.ml.data import load_splits
from shared.ml.predictor import Predictor
from shared.ml.training import TrainConfig, train_classifier
from shared.processes import free_port


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def describe(name: str, samples_ms: list[float]) -> str:
    return (
        f"{name:<28} p50 {percentile(samples_ms, 0.50):7.3f} ms   "
        f"p99 {percentile(samples_ms, 0.99):7.3f} ms   mean {statistics.fmean(samples_ms):7.3f} ms"
    )


def train_and_save(directory: Path) -> list[list[float]]:
    torch.set_num_threads(1)
    splits = load_splits("digits", seed=42)
    architecture = design_architecture(splits.num_features, splits.num_classes, [128, 64])
    model, _ = train_classifier(splits, architecture, TrainConfig(epochs=10, seed=42))
    save_model(directory, model, architecture, splits.normalization, class_names=splits.class_names)
    return splits.x_test_raw.tolist()


def time_in_process(directory: Path, rows: list[list[float]], count: int) -> list[float]:
    predictor = Predictor.from_path(str(directory))
    samples = []
    for i in range(count):
        started = time.perf_counter()
        predictor.predict([rows[i % len(rows)]])
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def time_over_http(url: str, rows: list[list[float]], count: int) -> list[float]:
    samples = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(count):
            started = time.perf_counter()
            response = client.post("/predict", json={"rows": [rows[i % len(rows)]]})
            samples.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return samples


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError("model server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        rows = train_and_save(model_dir)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "services.deployer.model_server",
             "--model-dir", str(model_dir), "--port", str(port), "--log-level", "WARNING",
             "--public"],
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url)
            time_over_http(url, rows, 50)  # warm-up
            time_in_process(model_dir, rows, 50)
            baseline = time_in_process(model_dir, rows, args.requests)
            served = time_over_http(url, rows, args.requests)
        finally:
            server.terminate()
            server.wait(10)

    print(f"single-row predictions, {args.requests} each, digits MLP 64-128-64-10")
    print(describe("in-process Predictor (base)", baseline))
    print(describe("HTTP POST /predict", served))
    ratio = percentile(served, 0.50) / percentile(baseline, 0.50)
    print(f"served / in-process p50 ratio: {ratio:.1f}x")
    print(f"served p99 vs the 100 ms gate: {percentile(served, 0.99):.2f} ms")


if __name__ == "__main__":
    main()
