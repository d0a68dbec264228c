"""The NCCL path, for a machine with CUDA: the platform's DDP rank code on NCCL (one rank per
GPU) against the same job on gloo and the CPU, measured in the same run. Not part of the test
suite, which runs without a GPU.

    .venv/bin/python -m bench.nccl_job [--epochs 30] [--rows 100000]

Prints each backend's training-loop seconds, samples/s and validation accuracy; the job is
the synthetic classification set of bench.synthetic_throughput (100k x 100 by default).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from bench.synthetic_throughput import CLASSES, FEATURES, synthetic_splits
from shared.ml.architecture import design_architecture
from shared.ml.distributed import process_group
from shared.ml.strategies import Placement, run_rank
from shared.ml.training import TrainConfig
from shared.processes import free_port


def _rank(
    rank: int, world: int, port: int, backend: str, rows: int, config: TrainConfig, out: str
) -> None:
    torch.set_num_threads(1)
    splits = synthetic_splits(rows)
    architecture = design_architecture(FEATURES, CLASSES)
    placement = Placement(strategy="ddp", rank=rank, world_size=world)
    with process_group("127.0.0.1", port, rank, world, timeout_s=300, backend=backend):
        started = time.perf_counter()
        run = run_rank(placement, splits, architecture, config)
        seconds = time.perf_counter() - started
    if rank == 0:
        assert run.result is not None
        rates = [m.samples_per_second or 0.0 for m in run.result.history]
        torch.save(
            {
                "seconds": seconds,
                "rate": sum(rates) / len(rates),
                "val_accuracy": run.result.final.val_accuracy,
                "device": str(next(run.model.parameters()).device),
            },
            out,
        )


def measure(backend: str, world: int, rows: int, config: TrainConfig) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "rank0.pt")
        port = free_port("127.0.0.1")
        mp.spawn(_rank, args=(world, port, backend, rows, config, out), nprocs=world)
        figures: dict[str, object] = torch.load(out, weights_only=True)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=512)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device here: nothing to measure")
        return 1
    gpus = torch.cuda.device_count()
    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, early_stopping=False, checkpoint_every=0
    )
    print(f"{torch.cuda.get_device_name(0)} x {gpus}; DDP on {gpus} rank(s), {args.epochs} epochs")
    gloo = measure("gloo", gpus, args.rows, config)
    nccl = measure("nccl", gpus, args.rows, config)
    for name, figures in (("gloo (CPU)", gloo), ("nccl (CUDA)", nccl)):
        print(
            f"{name:<12} {figures['seconds']:8.2f} s  {figures['rate']:>10.0f} samples/s  "
            f"val acc {figures['val_accuracy']:.4f}  on {figures['device']}"
        )
    ratio = float(nccl["rate"]) / float(gloo["rate"])  # type: ignore[arg-type]
    print(f"nccl / gloo samples/s: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
