"""`ddp` against the parameter server (sync and async) at world sizes 1, 2 and 4 on digits:
samples/s, time to 0.97 test accuracy, final test accuracy. Every configuration runs the
platform's own rank code (shared.ml.strategies.run_rank) in spawned processes on gloo, one
thread each; the first row (ddp at world size 1) is the baseline the ratios refer to.

    .venv/bin/python -m bench.strategies [--epochs 30] [--sizes 1 2 4]

The test accuracy is measured on the lead after every epoch (from a checkpoint of its
weights, outside the timed training); "time to 0.97" is the training time until the first
epoch at or above it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from shared.ml.architecture import build_model, design_architecture
from shared.ml.checkpoint import TrainingCheckpoint
from shared.ml.data import load_splits
from shared.ml.distributed import process_group
from shared.ml.evaluate import loss_and_accuracy
from shared.ml.strategies import Placement, run_rank
from shared.ml.training import EpochMetrics, TrainConfig
from shared.processes import free_port

TARGET_ACCURACY = 0.97
SERVERS = 1


def _rank(rank: int, port: int, job: dict[str, Any], config: TrainConfig, out: str) -> None:
    torch.set_num_threads(1)
    splits = load_splits("digits", seed=config.seed)
    architecture = design_architecture(splits.num_features, splits.num_classes, [128, 64])
    placement = Placement(rank=rank, **job)
    curve: list[tuple[float, float]] = []  # (training seconds so far, test accuracy)
    elapsed = {"training": 0.0}
    x_test, y_test = torch.from_numpy(splits.x_test), torch.from_numpy(splits.y_test)

    def on_epoch(metrics: EpochMetrics) -> None:
        elapsed["training"] += metrics.seconds

    def on_checkpoint(checkpoint: TrainingCheckpoint) -> None:
        model = build_model(architecture)
        model.load_state_dict(checkpoint.model_state)
        _, accuracy = loss_and_accuracy(model, x_test, y_test)
        curve.append((elapsed["training"], accuracy))

    with process_group("127.0.0.1", port, rank, placement.world_size, timeout_s=120):
        started = time.perf_counter()
        run = run_rank(
            placement, splits, architecture, config, on_epoch=on_epoch, on_checkpoint=on_checkpoint
        )
        wall = time.perf_counter() - started
    if placement.is_lead:
        assert run.result is not None
        rates = [m.samples_per_second or 0.0 for m in run.result.history]
        torch.save({"curve": curve, "rates": rates, "wall": wall}, out)
    os._exit(0)  # torch's teardown of gloo's threads can abort a finished rank


def measure(job: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "lead.pt")
        mp.spawn(_rank, args=(free_port("127.0.0.1"), job, config, out), nprocs=job["world_size"])
        saved: dict[str, Any] = torch.load(out, weights_only=True)
    reached = next((t for t, accuracy in saved["curve"] if accuracy >= TARGET_ACCURACY), None)
    rates = saved["rates"]
    return {
        "samples_per_second": sum(rates) / len(rates),
        "time_to_target": reached,
        "final_accuracy": saved["curve"][-1][1],
    }


def jobs(sizes: list[int]) -> list[tuple[str, int, dict[str, Any]]]:
    rows = []
    for size in sizes:
        rows.append(("ddp", size, {"strategy": "ddp", "world_size": size}))
    for mode, staleness in (("sync", 0), ("async", 2)):
        for size in sizes:
            rows.append(
                (
                    f"ps {mode}" + (f" s={staleness}" if staleness else ""),
                    size,
                    {
                        "strategy": "parameter_server",
                        "world_size": size + SERVERS,
                        "servers": SERVERS,
                        "ps_mode": mode,
                        "max_staleness": staleness,
                    },
                )
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch-size", type=int, default=32, help="per worker")
    args = parser.parse_args()
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=0.002,
        optimizer="adamw",
        weight_decay=1e-4,
        seed=42,
        checkpoint_every=1,  # the lead's weights after every epoch, for the test accuracy
        early_stopping=False,
    )
    print(
        f"digits MLP 64-128-64-10, {args.epochs} epochs, batch {args.batch_size} per worker, "
        f"{SERVERS} parameter server, gloo, 1 thread per process"
    )
    print(
        f"{'strategy':<14}{'workers':>8}{'samples/s':>12}{'ratio':>7}"
        f"{'to 0.97 (s)':>13}{'final acc':>11}"
    )
    baseline: float | None = None
    for name, workers, job in jobs(args.sizes):
        figures = measure(job, config)
        rate = figures["samples_per_second"]
        baseline = baseline or rate
        reached = figures["time_to_target"]
        to_target = f"{reached:.2f}" if reached is not None else "not reached"
        print(
            f"{name:<14}{workers:>8}{rate:>12.0f}{rate / baseline:>7.2f}"
            f"{to_target:>13}{figures['final_accuracy']:>11.4f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
