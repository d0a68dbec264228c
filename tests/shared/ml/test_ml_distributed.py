"""DDP over real gloo process groups (two local ranks): with per-rank batch b it takes the
same steps as one process with batch 2·b over the same permutation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from shared.ml.architecture import Architecture, build_model, design_architecture
from shared.ml.data import DatasetSplits
from shared.ml.distributed import process_group, shard_order, whole_order
from shared.ml.training import TrainConfig, Trainer, seed_everything
from shared.processes import free_port

WORLD_SIZE = 2
PER_RANK_BATCH = 16
# A multiple of WORLD_SIZE * PER_RANK_BATCH, so every rank's batches are full and equal.
TRAIN_ROWS = 512
CONFIG = TrainConfig(
    epochs=3, batch_size=PER_RANK_BATCH, learning_rate=0.01, seed=3, early_stopping=False
)


def _trimmed(splits: DatasetSplits) -> DatasetSplits:
    return dataclasses.replace(
        splits, x_train=splits.x_train[:TRAIN_ROWS], y_train=splits.y_train[:TRAIN_ROWS]
    )


def _rank(rank: int, port: int, splits: DatasetSplits, arch: Architecture, out: Path) -> None:
    torch.set_num_threads(1)
    with process_group("127.0.0.1", port, rank, WORLD_SIZE, timeout_s=30, backend="gloo"):
        seed_everything(CONFIG.seed)
        model = DistributedDataParallel(build_model(arch))
        order = shard_order(TRAIN_ROWS, seed=CONFIG.seed, rank=rank, world_size=WORLD_SIZE)
        Trainer(model, arch, splits, CONFIG, epoch_sampler=order).fit()
        if rank == 0:
            torch.save(model.module.state_dict(), out)


def test_ddp_at_world_size_two_takes_the_single_process_step(
    digits: DatasetSplits, tmp_path: Path
) -> None:
    splits = _trimmed(digits)
    arch = design_architecture(splits.num_features, splits.num_classes, hidden_layers=[32])
    out = tmp_path / "ddp.pt"
    mp.spawn(_rank, args=(free_port("127.0.0.1"), splits, arch, out), nprocs=WORLD_SIZE)

    seed_everything(CONFIG.seed)
    single = build_model(arch)
    config = CONFIG.model_copy(update={"batch_size": WORLD_SIZE * PER_RANK_BATCH})
    Trainer(single, arch, splits, config, epoch_sampler=whole_order(TRAIN_ROWS, seed=3)).fit()

    ddp_weights = torch.load(out, weights_only=True)
    for name, tensor in single.state_dict().items():
        assert torch.allclose(tensor, ddp_weights[name], atol=1e-5), name
    # The runs did move the weights: the comparison is not of two untouched models.
    seed_everything(CONFIG.seed)
    untouched = build_model(arch).state_dict()
    assert any(not torch.equal(untouched[n], t) for n, t in single.state_dict().items())
