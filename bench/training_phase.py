"""The platform's training phase against torchrun, on the same job: the digits MLP
64-128-64-10, 30 epochs, batch 64 per worker, DDP on 2 workers, one thread per process.

Platform: real node processes (a parameter server as coordinator, two workers), warmed by
one job as a cluster's nodes are by phase 2's check, then jobs sent as the trainer sends
them. Baseline, measured in the same run: bench/torchrun_ddp_digits.py under
`torch.distributed.run --standalone`, whose loop does the same per-epoch evaluation.

    .venv/bin/python -m bench.training_phase [--runs 3] [--epochs 30]

Needs NATS with JetStream at NEXUS_NATS_URL (default nats://127.0.0.1:4222). Prints the
median of each figure and the ratios: training loop, set-up (assignment to first step) and
assignment to model stored (against torchrun's wall time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from bench.local_nodes import PROJECT_ROOT, LocalNodes
from services.trainer.node_task import train_config
from shared.ml.architecture import Architecture
from shared.ml.data import load_splits
from shared.ml.distributed import process_group
from shared.ml.strategies import Placement, run_rank
from shared.processes import free_port
from shared.spec import WorkflowSpec

ARCHITECTURE = {
    "input_dim": 64,
    "num_classes": 10,
    "hidden_layers": [128, 64],
    "activation": "relu",
    "dropout": 0.0,
}


def job_spec(epochs: int, strategy: str = "ddp") -> WorkflowSpec:
    return WorkflowSpec.model_validate(
        {
            "name": "bench-digits",
            "dataset": "digits",
            "training": {
                "strategy": strategy,
                "epochs": epochs,
                "batch_size": 64,
                "learning_rate": 0.002,
                "optimizer": "adam",
                # Every epoch runs, as in the baseline: no early stop, one final checkpoint.
                "patience": 1000,
                "checkpoint_every": 1000,
            },
        }
    )


def _spawned_rank(rank: int, port: int, epochs: int, out: str) -> None:
    torch.set_num_threads(1)
    spec = job_spec(epochs)
    splits = load_splits(spec.dataset, seed=spec.training.seed)
    placement = Placement(strategy="ddp", rank=rank, world_size=2)
    with process_group("127.0.0.1", port, rank, 2, timeout_s=120):
        run = run_rank(placement, splits, Architecture(**ARCHITECTURE), train_config(spec.training))
    if rank == 0:
        assert run.result is not None
        torch.save({"loop_seconds": run.result.seconds}, out)
    os._exit(0)  # torch's teardown of gloo's threads can abort a finished rank


def spawned_once(epochs: int) -> dict[str, float]:
    """The platform's rank code without the nodes around it (torch.multiprocessing.spawn):
    tells the trainer's own cost from the node's."""
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "rank0.pt")
        mp.spawn(_spawned_rank, args=(free_port("127.0.0.1"), epochs, out), nprocs=2)
        figures: dict[str, float] = torch.load(out, weights_only=True)
    return figures


def torchrun_once(epochs: int, workers: int) -> dict[str, float]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", str(workers), "bench/torchrun_ddp_digits.py"]
    command += ["--epochs", str(epochs)]
    started = time.perf_counter()
    run = subprocess.run(
        command,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(run.stderr[-2000:])
    figures: dict[str, float] = json.loads(run.stdout.strip().splitlines()[-1])
    return {**figures, "wall_seconds": wall}


Runs = list[dict[str, float]]


async def measure(epochs: int, runs: int) -> tuple[Runs, Runs, Runs]:
    """Platform and torchrun runs interleaved, so a drift of the machine's speed hits both."""
    platform, spawned, baseline = [], [], []
    with tempfile.TemporaryDirectory() as home:
        roles = ["parameter_server", "worker", "worker"]
        async with LocalNodes(Path(home), roles) as nodes:
            # The first job, a second after the topology check (about phase 2's design time):
            # the nodes pre-load the training stack meanwhile.
            await asyncio.sleep(1)
            _, first = await nodes.train(job_spec(1), ARCHITECTURE)
            setup = first["result"]["setup_seconds"]
            print(f"nodes started and connected in {nodes.connected_seconds:.2f} s")
            print(f"set-up of the first job, 1 s after the topology check: {setup:.3f} s")
            for _ in range(runs):
                seconds, event = await nodes.train(job_spec(epochs), ARCHITECTURE)
                result: dict[str, Any] = event["result"]
                platform.append(
                    {
                        "assignment_to_model_seconds": seconds,
                        "loop_seconds": result["seconds"],
                        "setup_seconds": result["setup_seconds"],
                        "val_accuracy": result["kept"]["val_accuracy"],
                    }
                )
                await nodes.idle()  # the nodes wait, idle, while the others run
                spawned.append(await asyncio.to_thread(spawned_once, epochs))
                baseline.append(await asyncio.to_thread(torchrun_once, epochs, 2))
    return platform, spawned, baseline


def median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()

    platform, spawned, baseline = asyncio.run(measure(args.epochs, args.runs))
    rows = [
        ("training loop (s)", "loop_seconds", "loop_seconds"),
        ("set-up to first step (s)", "setup_seconds", "setup_seconds"),
        ("assignment -> model stored (s)", "assignment_to_model_seconds", "wall_seconds"),
    ]
    print(f"digits MLP 64-128-64-10, {args.epochs} epochs, DDP on 2 workers, batch 64 per worker")
    print(f"{f'medians of {args.runs} runs':<32}{'platform':>10}{'torchrun':>10}{'ratio':>8}")
    for label, ours, theirs in rows:
        mine, base = median(platform, ours), median(baseline, theirs)
        print(f"{label:<32}{mine:>10.3f}{base:>10.3f}{mine / base:>8.2f}")
    print("(torchrun's last figure is its whole wall time: it has no warm processes)")
    bare = median(spawned, "loop_seconds")
    print(
        f"the same rank code spawned without nodes: loop {bare:.3f} s, "
        f"{bare / median(baseline, 'loop_seconds'):.2f}x torchrun's"
    )
    accuracy = median(platform, "val_accuracy")
    print(f"validation accuracy of the platform's kept model: {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
