"""Training throughput per worker on a seeded synthetic classification set (100k rows x 100
features, 10 classes), against plain PyTorch in one process measured in the same run: the
same MLP, batch and optimizer, one thread, a bare loop over shuffled mini-batches, in a
spawned process like the ranks. The goal is that each worker of a distributed job trains at
>= 80% of that single-process rate. Every batch size is measured in turn (baseline, then the
platform's jobs), since the gradient exchange per step costs the same whatever the batch.

    .venv/bin/python -m bench.synthetic_throughput [--rows 100000] [--epochs 2]
        [--batch-sizes 128 512 2048]
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
    if placement.is_lead:
        assert run.result is not None
        nodes = [n for m in run.result.history for n in m.nodes or [] if n["role"] == "worker"]
        torch.save({"rates": [n["samples_per_second"] for n in nodes]}, out)
    os._exit(0)  # torch's teardown of gloo's threads can abort a finished rank


def per_worker_rate(job: dict[str, Any], rows: int, config: TrainConfig) -> float:
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "rates.pt")
        port = free_port("127.0.0.1")
        mp.spawn(_rank, args=(port, job, rows, config, out), nprocs=job["world_size"])
        rates: list[float] = torch.load(out, weights_only=True)["rates"]
    return sum(rates) / len(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512, 2048])
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
    print(f"{'batch/worker':>12}{'plain torch':>13}" + "".join(f"{n:>26}" for n, _ in jobs))
    for batch_size in args.batch_sizes:
        config = TrainConfig(
            epochs=args.epochs,
            batch_size=batch_size,
            learning_rate=1e-3,
            early_stopping=False,
            checkpoint_every=0,
        )
        baseline = plain_rate_in_a_process(args.rows, config)
        cells = []
        for _, job in jobs:
            rate = per_worker_rate(job, args.rows, config)
            cells.append(f"{rate:>17.0f} ({rate / baseline:4.2f}x)")
        print(f"{batch_size:>12}{baseline:>13.0f}" + "".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
