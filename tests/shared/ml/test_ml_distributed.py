"""DDP and the synchronous parameter server over real gloo process groups (local ranks):
with two workers and per-rank batch b, both take the same steps as one process with batch 2·b
over the same permutation."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from shared.ml.architecture import Architecture, build_model, design_architecture
from shared.ml.data import DatasetSplits
from shared.ml.distributed import process_group, shard_order, whole_order
from shared.ml.parameter_server import (
    AsyncWorkerStep,
    push_gradients_pull_weights,
    serve_parameters,
    serve_parameters_async,
    steps_per_epoch,
)
from shared.ml.training import TrainConfig, Trainer, seed_everything
from shared.processes import free_port

WORLD_SIZE = 2
PER_RANK_BATCH = 16
# A multiple of WORLD_SIZE * PER_RANK_BATCH, so every rank's batches are full and equal.
TRAIN_ROWS = 512
CONFIG = TrainConfig(
    epochs=3, batch_size=PER_RANK_BATCH, learning_rate=0.01, seed=3, early_stopping=False
)


@pytest.fixture
def splits(digits: DatasetSplits) -> DatasetSplits:
    """Digits with TRAIN_ROWS training rows."""
    return dataclasses.replace(
        digits, x_train=digits.x_train[:TRAIN_ROWS], y_train=digits.y_train[:TRAIN_ROWS]
    )


@pytest.fixture
def arch(splits: DatasetSplits) -> Architecture:
    return design_architecture(splits.num_features, splits.num_classes, hidden_layers=[32])


# Steps every worker takes, so the parameter server knows how many to serve.
STEPS = CONFIG.epochs * steps_per_epoch(TRAIN_ROWS, WORLD_SIZE, PER_RANK_BATCH)


@contextlib.contextmanager
def _joined(rank: int, port: int, world_size: int, arch: Architecture) -> Iterator[nn.Module]:
    """In a spawned rank: one thread, the gloo group, and the seeded initial model."""
    torch.set_num_threads(1)
    with process_group("127.0.0.1", port, rank, world_size, timeout_s=60, backend="gloo"):
        seed_everything(CONFIG.seed)
        yield build_model(arch)


def _worker_order(worker: int) -> Callable[[int], list[int]]:
    return shard_order(TRAIN_ROWS, seed=CONFIG.seed, rank=worker, world_size=WORLD_SIZE)


def _rank(rank: int, port: int, splits: DatasetSplits, arch: Architecture, out: Path) -> None:
    with _joined(rank, port, WORLD_SIZE, arch) as plain:
        model = DistributedDataParallel(plain)
        order = _worker_order(rank)
        Trainer(model, arch, splits, CONFIG, epoch_sampler=order).fit()
        if rank == 0:
            torch.save(model.module.state_dict(), out)


def _ps_rank(rank: int, port: int, splits: DatasetSplits, arch: Architecture, out: Path) -> None:
    """Rank 0 is the parameter server; ranks 1..WORLD_SIZE are the workers."""
    with _joined(rank, port, WORLD_SIZE + 1, arch) as model:
        if rank == 0:
            serve_parameters(model, CONFIG, workers=WORLD_SIZE, steps=STEPS, server_rank=0)
            torch.save(model.state_dict(), out)
            return
        order = _worker_order(rank - 1)
        Trainer(
            model,
            arch,
            splits,
            CONFIG,
            epoch_sampler=order,
            apply_gradients=lambda: push_gradients_pull_weights(model, server_rank=0),
        ).fit()


def _single_process_weights(splits: DatasetSplits, arch: Architecture) -> dict[str, torch.Tensor]:
    seed_everything(CONFIG.seed)
    single = build_model(arch)
    config = CONFIG.model_copy(update={"batch_size": WORLD_SIZE * PER_RANK_BATCH})
    order = whole_order(TRAIN_ROWS, seed=CONFIG.seed)
    Trainer(single, arch, splits, config, epoch_sampler=order).fit()
    weights = single.state_dict()
    # The run did move the weights: no comparison below is of two untouched models.
    seed_everything(CONFIG.seed)
    untouched = build_model(arch).state_dict()
    assert any(not torch.equal(untouched[n], t) for n, t in weights.items())
    return weights


def _assert_same_weights(expected: dict[str, torch.Tensor], path: Path) -> None:
    trained = torch.load(path, weights_only=True)
    for name, tensor in expected.items():
        assert torch.allclose(tensor, trained[name], atol=1e-5), name


def test_ddp_at_world_size_two_takes_the_single_process_step(
    splits: DatasetSplits, arch: Architecture, tmp_path: Path
) -> None:
    out = tmp_path / "ddp.pt"
    mp.spawn(_rank, args=(free_port("127.0.0.1"), splits, arch, out), nprocs=WORLD_SIZE)
    _assert_same_weights(_single_process_weights(splits, arch), out)


def test_synchronous_parameter_server_takes_the_ddp_step(
    splits: DatasetSplits, arch: Architecture, tmp_path: Path
) -> None:
    out = tmp_path / "ps.pt"
    port = free_port("127.0.0.1")
    mp.spawn(_ps_rank, args=(port, splits, arch, out), nprocs=WORLD_SIZE + 1)
    _assert_same_weights(_single_process_weights(splits, arch), out)


def _async_rank(
    rank: int,
    port: int,
    splits: DatasetSplits,
    arch: Architecture,
    out: Path,
    max_staleness: int,
) -> None:
    """Rank 0 serves with bounded staleness; ranks 1..WORLD_SIZE are the workers."""
    with _joined(rank, port, WORLD_SIZE + 1, arch) as model:
        if rank == 0:
            log = serve_parameters_async(
                model,
                CONFIG,
                workers=list(range(1, WORLD_SIZE + 1)),
                steps=STEPS,
                max_staleness=max_staleness,
            )
            torch.save({"weights": model.state_dict(), "log": log}, out)
            return
        step = AsyncWorkerStep(model, server_rank=0)
        order = _worker_order(rank - 1)
        Trainer(model, arch, splits, CONFIG, epoch_sampler=order, apply_gradients=step).fit()


def _run_async(splits: DatasetSplits, arch: Architecture, out: Path, max_staleness: int) -> dict:
    port = free_port("127.0.0.1")
    mp.spawn(_async_rank, args=(port, splits, arch, out, max_staleness), nprocs=WORLD_SIZE + 1)
    saved: dict = torch.load(out, weights_only=True)
    return saved


def test_async_with_no_staleness_is_the_synchronous_step(
    splits: DatasetSplits, arch: Architecture, tmp_path: Path
) -> None:
    saved = _run_async(splits, arch, tmp_path / "async0.pt", max_staleness=0)
    expected = _single_process_weights(splits, arch)
    for name, tensor in expected.items():
        assert torch.allclose(tensor, saved["weights"][name], atol=1e-5), name
    assert all(clock == version for _, clock, version in saved["log"])


def test_async_workers_never_run_past_the_staleness_bound(
    splits: DatasetSplits, arch: Architecture, tmp_path: Path
) -> None:
    saved = _run_async(splits, arch, tmp_path / "async2.pt", max_staleness=2)
    log = saved["log"]
    assert sorted(clock for rank, clock, _ in log if rank == 1) == list(range(STEPS))
    assert max(clock - version for _, clock, version in log) <= 2
    # The trained weights still classify: the stale steps did not wreck the run.
    model = build_model(arch)
    model.load_state_dict(saved["weights"])
    with torch.no_grad():
        predicted = model(torch.from_numpy(splits.x_val)).argmax(dim=1)
    accuracy = (predicted == torch.from_numpy(splits.y_val)).float().mean().item()
    assert accuracy > 0.85
