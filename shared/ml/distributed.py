"""torch.distributed pieces every multi-process strategy uses: a process group joined at a
TCPStore rendezvous (gloo on CPU, NCCL when CUDA is present), always left again, and the
training-row order of one rank's shard.

A rank's shard comes from `DistributedSampler` (seeded, `set_epoch` every epoch): with
world size N and per-rank batch b, batch k of every rank together is exactly batch k of one
process with batch N·b over the same permutation, which is why DDP's averaged gradient is
the single-process step (tests/shared/ml/test_ml_distributed.py checks it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


@contextlib.contextmanager
def process_group(
    master_addr: str,
    master_port: int,
    rank: int,
    world_size: int,
    *,
    timeout_s: float,
    backend: str | None = None,
) -> Iterator[None]:
    """Join the group whose rank 0 hosts the TCPStore at `master_addr:master_port` (how
    torchrun and spawned tests meet)."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(
        master_addr, master_port, world_size, is_master=rank == 0, timeout=timeout
    )
    with joined_group(store, rank, world_size, timeout_s=timeout_s, backend=backend):
        yield


@contextlib.contextmanager
def torchrun_group(*, timeout_s: float, backend: str | None = None) -> Iterator[tuple[int, int]]:
    """Join the group torchrun set up (RANK, WORLD_SIZE, MASTER_ADDR/PORT in the environment,
    its agent's store); yields (rank, world size) and leaves the group however it ends."""
    dist.init_process_group(backend or default_backend(), timeout=timedelta(seconds=timeout_s))
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def joined_group(
    store: dist.Store,
    rank: int,
    world_size: int,
    *,
    timeout_s: float,
    backend: str | None = None,
) -> Iterator[None]:
    """Join the default process group at `store` (a cluster node passes a PrefixStore of its
    coordinator's warm TCPStore, one prefix per job); leave it on success and on failure
    (gloo can abort the process at exit otherwise). The timeout bounds the rendezvous and
    every collective: nothing waits gloo's default of minutes."""
    dist.init_process_group(
        backend or default_backend(),
        store=store,
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def shard_order(
    num_rows: int, *, seed: int, rank: int, world_size: int
) -> Callable[[int], list[int]]:
    """The epoch -> row order of this rank's shard, for `Trainer(epoch_sampler=...)`."""
    # The sampler only needs the row count; a range stands in for the dataset.
    rows: Any = range(num_rows)
    sampler: DistributedSampler[int] = DistributedSampler(
        rows, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
    )

    def order(epoch: int) -> list[int]:
        sampler.set_epoch(epoch)
        return list(sampler)

    return order


def whole_order(num_rows: int, *, seed: int) -> Callable[[int], list[int]]:
    """The permutation every shard is cut from: one process's order with the same maths."""
    return shard_order(num_rows, seed=seed, rank=0, world_size=1)
