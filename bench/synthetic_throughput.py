"""Training throughput per worker on a seeded synthetic classification set (100k rows x 100
features, 10 classes), against plain PyTorch in one process measured in the same run: the
same MLP, batch and optimizer, one thread, a bare loop over shuffled mini-batches, in a
spawned process like the ranks. The goal is that each worker of a distributed job trains at
>= 80% of that single-process rate. Every batch size is measured in turn (baseline, then the
platform's jobs), since the gradient exchange per step costs the same whatever the batch.

    .venv/bin/python -m bench.synthetic_throughput [--rows 100000] [--epochs 2]
        [--batch-sizes 128 512 2048 4096 8192]

Each row also prints the floor a step's exchange sets on this machine: one all_reduce of the
gradient's size on the DDP job's idle group, against plain torch's time for one step. Where
the exchange is comparable to the step (small batches on a machine whose loopback round trip
costs ~0.1 ms), no DDP can reach the goal; the ratio rises with the batch.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from shared.ml.architecture import build_model, design_architecture
from shared.ml.data import DatasetSplits, splits_of
from shared.ml.distributed import process_group
from shared.ml.strategies import Placement, run_rank
from shared.ml.training import TrainConfig
from shared.processes import free_port

FEATURES, CLASSES = 100, 10


def synthetic_splits(rows: int, seed: int = 0) -> DatasetSplits:
    """Seeded: scikit-learn's make_classification, 70/15/15, normalized on the train rows."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows,
        n_features=FEATURES,
        n_informative=40,
        n_classes=CLASSES,
        random_state=seed,
    )
    order = np.random.default_rng(seed).permutation(rows)
    train, val, test = np.split(order, [int(0.7 * rows), int(0.85 * rows)])
    classes = [str(c) for c in range(CLASSES)]
    return splits_of("synthetic", x, y.astype(np.int64), classes, train, val, test)


def _plain(rows: int, config: TrainConfig, out: str) -> None:
    torch.set_num_threads(1)
    torch.save({"rate": plain_torch_rate(synthetic_splits(rows), config)}, out)


def plain_rate_in_a_process(rows: int, config: TrainConfig) -> float:
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "plain.pt")
        process = mp.get_context("spawn").Process(target=_plain, args=(rows, config, out))
        process.start()
        process.join()
        rate: float = torch.load(out, weights_only=True)["rate"]
    return rate


def plain_torch_rate(splits: DatasetSplits, config: TrainConfig) -> float:
    """The baseline: a bare loop, the rows it trains on per second of training."""
    torch.manual_seed(config.seed)
    architecture = design_architecture(FEATURES, CLASSES)
    model = build_model(architecture)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    x, y = torch.from_numpy(splits.x_train), torch.from_numpy(splits.y_train)
    seconds = 0.0
    for epoch in range(config.epochs):
        rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        started = time.perf_counter()
        for batch in rows.split(config.batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
        seconds += time.perf_counter() - started
    return config.epochs * len(x) / seconds


def _rank(
    rank: int, port: int, job: dict[str, Any], rows: int, config: TrainConfig, out: str
) -> None:
    torch.set_num_threads(1)
    splits = synthetic_splits(rows)
    placement = Placement(rank=rank, **job)
    architecture = design_architecture(FEATURES, CLASSES)
    with process_group("127.0.0.1", port, rank, placement.world_size, timeout_s=300):
        run = run_rank(placement, splits, architecture, config)
        exchange = gradient_exchange_seconds(run.model)
    if placement.is_lead:
        assert run.result is not None
        nodes = [n for m in run.result.history for n in m.nodes or [] if n["role"] == "worker"]
        rates = [n["samples_per_second"] for n in nodes]
        torch.save({"rates": rates, "exchange_seconds": exchange}, out)
    os._exit(0)  # torch's teardown of gloo's threads can abort a finished rank


def gradient_exchange_seconds(model: torch.nn.Module, repeats: int = 50) -> float:
    """The median time of one all_reduce of a tensor the size of the model's gradient, the
    machine's floor for one DDP step's exchange, measured on the job's group once it idles."""
    gradient = torch.zeros(sum(p.numel() for p in model.parameters()))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        dist.all_reduce(gradient)
        times.append(time.perf_counter() - started)
    return sorted(times)[repeats // 2]


def per_worker_rate(job: dict[str, Any], rows: int, config: TrainConfig) -> tuple[float, float]:
    """The job's mean samples/s per worker, and its gradient exchange time (seconds)."""
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "rates.pt")
        port = free_port("127.0.0.1")
        mp.spawn(_rank, args=(port, job, rows, config, out), nprocs=job["world_size"])
        figures = torch.load(out, weights_only=True)
    rates: list[float] = figures["rates"]
    return sum(rates) / len(rates), float(figures["exchange_seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512, 2048, 4096, 8192])
    args = parser.parse_args()
    jobs = [
        ("single (platform)", {"strategy": "single", "world_size": 1}),
        ("ddp, 2 workers", {"strategy": "ddp", "world_size": 2}),
        (
            "ps sync, 2 workers",
            {"strategy": "parameter_server", "world_size": 3, "servers": 1},
        ),
    ]
    print(
        f"synthetic {args.rows} x {FEATURES}, {CLASSES} classes, MLP "
        f"{design_architecture(FEATURES, CLASSES).hidden_layers}, {args.epochs} epochs, "
        "1 thread per process; samples/s per worker and its ratio to plain torch"
    )
    header = f"{'batch/worker':>12}{'plain torch':>13}" + "".join(f"{n:>26}" for n, _ in jobs)
    print(header + f"{'plain step':>12}{'all_reduce':>12}")
    for batch_size in args.batch_sizes:
        config = TrainConfig(
            epochs=args.epochs,
            batch_size=batch_size,
            learning_rate=1e-3,
            early_stopping=False,
            checkpoint_every=0,
        )
        baseline = plain_rate_in_a_process(args.rows, config)
        cells, exchanges = [], {}
        for name, job in jobs:
            rate, exchanges[name] = per_worker_rate(job, args.rows, config)
            cells.append(f"{rate:>17.0f} ({rate / baseline:4.2f}x)")
        step_ms = 1000 * batch_size / baseline
        floor = f"{step_ms:>9.2f} ms{1000 * exchanges['ddp, 2 workers']:>9.2f} ms"
        print(f"{batch_size:>12}{baseline:>13.0f}" + "".join(cells) + floor, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
