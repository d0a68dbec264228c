"""MNIST through the CNN `model: auto` designs for 1x28x28 images, trained with `ddp` on 2
workers by the platform's rank code (shared.ml.strategies.run_rank, spawned processes on gloo,
one thread each), against a plain single-process torch loop over the same network and the
same global batch, using as many threads as the two workers have processes. Prints samples/s
of both and the ratio, and the ddp run's test accuracy on the 10,000 test images (goal >= 0.98).

    .venv/bin/python -m bench.cnn_mnist [--epochs 3] [--batch-size 64]

Reads the MNIST IDX files from ../shared/data/mnist (see bench/mnist_npz.py); benchmarks only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from bench.mnist_npz import load_mnist
from shared.auto_design import auto_layers
from shared.ml.architecture import Architecture, build_model
from shared.ml.data import DatasetSplits, splits_of
from shared.ml.distributed import process_group
from shared.ml.evaluate import loss_and_accuracy
from shared.ml.strategies import Placement, run_rank
from shared.ml.training import TrainConfig, seed_everything
from shared.processes import free_port

WORKERS = 2
VAL_ROWS = 5000
SOURCE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def mnist_splits(seed: int) -> DatasetSplits:
    """The 60,000 training images less a seeded 5,000 for validation; the official test set."""
    arrays = load_mnist(SOURCE)
    x = np.concatenate([arrays["x_train"], arrays["x_test"]]).reshape(70000, -1)
    y = np.concatenate([arrays["y_train"], arrays["y_test"]])
    order = np.random.default_rng(seed).permutation(60000)
    val, train, test = order[:VAL_ROWS], order[VAL_ROWS:], np.arange(60000, 70000)
    return splits_of("mnist", x, y, [str(d) for d in range(10)], train, val, test)


def cnn(splits: DatasetSplits) -> Architecture:
    layers, _ = auto_layers((1, 28, 28))
    return Architecture(
        input_dim=splits.num_features, num_classes=10, layers=layers, input_shape=[1, 28, 28]
    )


def _rank(rank: int, port: int, config: TrainConfig, out: str) -> None:
    torch.set_num_threads(1)
    splits = mnist_splits(config.seed)
    placement = Placement(strategy="ddp", rank=rank, world_size=WORKERS)
    with process_group("127.0.0.1", port, rank, WORKERS, timeout_s=600):
        run = run_rank(placement, splits, cnn(splits), config)
    if placement.is_lead:
        assert run.result is not None
        _, accuracy = loss_and_accuracy(
            run.model, torch.from_numpy(splits.x_test), torch.from_numpy(splits.y_test)
        )
        rates = [m.samples_per_second or 0.0 for m in run.result.history]
        torch.save({"rates": rates, "accuracy": accuracy}, out)
    os._exit(0)  # torch's teardown of gloo's threads can abort a finished rank


def ddp_run(config: TrainConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "lead.pt")
        mp.spawn(_rank, args=(free_port("127.0.0.1"), config, out), nprocs=WORKERS)
        saved: dict[str, Any] = torch.load(out, weights_only=True)
    return saved


def plain_loop(config: TrainConfig, epochs: int) -> float:
    """The simplest training loop over the same network: samples/s of its epochs."""
    torch.set_num_threads(WORKERS)
    splits = mnist_splits(config.seed)
    seed_everything(config.seed)
    model = build_model(cnn(splits))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    x, y = torch.from_numpy(splits.x_train), torch.from_numpy(splits.y_train)
    batch = config.batch_size * WORKERS  # the ddp job's global batch
    started = time.perf_counter()
    for _ in range(epochs):
        for rows in torch.randperm(len(x)).split(batch):
            optimizer.zero_grad()
            F.cross_entropy(model(x[rows]), y[rows]).backward()
            optimizer.step()
    return epochs * len(x) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="per worker")
    parser.add_argument("--baseline-epochs", type=int, default=1)
    args = parser.parse_args()
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=1e-3,
        optimizer="adamw",
        weight_decay=1e-4,
        seed=42,
        early_stopping=False,
    )
    splits = mnist_splits(config.seed)
    architecture = cnn(splits)
    print(f"MNIST, 55,000 training images; {architecture.describe()}")
    print(f"{architecture.parameter_count:,} parameters; batch {args.batch_size} per worker")
    baseline = plain_loop(config, args.baseline_epochs)
    print(f"plain torch loop, 1 process x {WORKERS} threads: {baseline:,.0f} samples/s")
    figures = ddp_run(config)
    rate = sum(figures["rates"]) / len(figures["rates"])
    print(
        f"ddp, {WORKERS} workers x 1 thread, {args.epochs} epochs: {rate:,.0f} samples/s "
        f"({rate / baseline:.2f}x the plain loop); test accuracy {figures['accuracy']:.4f} "
        f"(goal >= 0.98)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
