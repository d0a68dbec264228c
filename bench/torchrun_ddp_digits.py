"""The baseline of bench.training_phase: the digits MLP trained with plain PyTorch DDP, as one
would write it for torchrun (DistributedSampler, DistributedDataParallel, Adam, gloo, one
thread per process). Each epoch also evaluates the whole train and validation splits, as the
platform's trainer does, so the two loops do the same work.

    python -m torch.distributed.run --standalone --nproc-per-node 2 bench/torchrun_ddp_digits.py

Rank 0 prints one JSON line: its set-up (process start to first step) and loop seconds.
"""

from __future__ import annotations

import argparse
import json
import time

PROCESS_STARTED = time.time()

import numpy as np  # noqa: E402  (imported after the clock starts: they are set-up too)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import DistributedSampler  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--learning-rate", type=float, default=0.002)
    args = parser.parse_args()

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.3, random_state=42, stratify=y
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-8
    xt = torch.from_numpy(((x_train - mean) / std).astype(np.float32))
    yt = torch.from_numpy(y_train.astype(np.int64))
    xv = torch.from_numpy(((x_val - mean) / std).astype(np.float32))
    yv = torch.from_numpy(y_val.astype(np.int64))
    torch.manual_seed(42)
    model = DistributedDataParallel(
        nn.Sequential(
            nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
        )
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    sampler = DistributedSampler(range(len(xt)), shuffle=True, seed=42)  # type: ignore[arg-type]

    loop_started = time.time()
    for epoch in range(args.epochs):
        model.train()
        sampler.set_epoch(epoch)
        rows = torch.tensor(list(sampler))
        for batch in rows.split(args.batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(xt[batch]), yt[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for features, labels in ((xt, yt), (xv, yv)):
                logits = model(features)
                F.cross_entropy(logits, labels).item()
                (logits.argmax(dim=1) == labels).float().mean().item()
    loop_seconds = time.time() - loop_started
    if rank == 0:
        print(
            json.dumps(
                {"setup_seconds": loop_started - PROCESS_STARTED, "loop_seconds": loop_seconds}
            ),
            flush=True,
        )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
