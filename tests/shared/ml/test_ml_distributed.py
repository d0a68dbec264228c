"""Every strategy's ranks (shared.ml.strategies) over real gloo process groups on local
processes: with two workers and per-rank batch b, DDP and the synchronous parameter server
(one server or the parameters sharded over two) take the same steps as one process with
batch 2·b over the same permutation; the asynchronous server keeps its staleness bound."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from pydantic import TypeAdapter

from shared.layer_spec import Layer
from shared.ml.architecture import Architecture, build_model, design_architecture
from shared.ml.checkpoint import TrainingCheckpoint
from shared.ml.data import DatasetSplits, load_splits
from shared.ml.distributed import process_group, whole_order
from shared.ml.parameter_server import ServerState, steps_per_epoch
from shared.ml.strategies import Placement, run_rank
from shared.ml.training import TrainConfig, Trainer, seed_everything
from tests.infrastructure import free_port
from tests.support import warm_processes

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


# Steps every worker takes in the run.
STEPS = CONFIG.epochs * steps_per_epoch(TRAIN_ROWS, WORLD_SIZE, PER_RANK_BATCH)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """What every rank of one run of the job starts from."""

    config: TrainConfig = CONFIG
    resume_from: TrainingCheckpoint | None = None
    server_state: ServerState | None = None


def _rank(
    rank: int,
    port: int,
    job: dict[str, Any],
    splits: DatasetSplits,
    arch: Architecture,
    out: Path,
    attempt: Attempt,
) -> None:
    """One spawned rank of the job `job` (Placement's fields but the rank): the lead saves
    the trained weights, every epoch's job metrics and its last snapshot, each server its
    version log and its last own state."""
    torch.set_num_threads(1)
    placement = Placement(rank=rank, **job)
    snapshots: list[TrainingCheckpoint] = []
    states: list[ServerState] = []
    with process_group("127.0.0.1", port, rank, placement.world_size, timeout_s=60):
        run = run_rank(
            placement,
            splits,
            arch,
            attempt.config,
            resume_from=attempt.resume_from,
            on_snapshot=snapshots.append,
            server_state=attempt.server_state,
            on_server_state=states.append,
        )
    if placement.is_lead:
        assert run.result is not None
        history = [m.to_dict() for m in run.result.history]
        torch.save({"weights": run.model.state_dict(), "history": history}, out / "lead.pt")
        (out / "snapshot.pkl").write_bytes(pickle.dumps(snapshots[-1] if snapshots else None))
    if placement.is_server:
        torch.save({"log": run.version_log}, out / f"server-{rank}.pt")
        last_state = states[-1] if states else None
        (out / f"server-state-{rank}.pkl").write_bytes(pickle.dumps(last_state))
    # Leave as a node process does: torch's teardown of gloo's threads can abort a process
    # that has finished its work.
    os._exit(0)


def _run(
    job: dict[str, Any],
    splits: DatasetSplits,
    arch: Architecture,
    out: Path,
    attempt: Attempt | None = None,
) -> dict:
    out.mkdir(exist_ok=True)
    port = free_port("127.0.0.1")
    attempt = attempt or Attempt()
    args = (port, job, splits, arch, out, attempt)
    warm_processes()  # the ranks are forked from its server
    mp.start_processes(_rank, args=args, nprocs=job["world_size"], start_method="forkserver")
    lead: dict = torch.load(out / "lead.pt", weights_only=True)
    return lead


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


def _assert_same_weights(expected: dict[str, torch.Tensor], trained: dict) -> None:
    for name, tensor in expected.items():
        assert torch.allclose(tensor, trained[name], atol=1e-5), name


DDP = {"strategy": "ddp", "world_size": WORLD_SIZE}


def _ps(servers: int, mode: str = "sync", max_staleness: int = 0) -> dict[str, Any]:
    return {
        "strategy": "parameter_server",
        "world_size": servers + WORLD_SIZE,
        "servers": servers,
        "ps_mode": mode,
        "max_staleness": max_staleness,
    }


def test_ddp_at_world_size_two_takes_the_single_process_step(
    splits: DatasetSplits, arch: Architecture, tmp_path: Path
) -> None:
    lead = _run(DDP, splits, arch, tmp_path)
    _assert_same_weights(_single_process_weights(splits, arch), lead["weights"])
    # Both workers trained their own half of the rows, and the job says so every epoch.
    for epoch in lead["history"]:
        workers = [n for n in epoch["nodes"] if n["role"] == "worker"]
        assert [n["samples"] for n in workers] == [TRAIN_ROWS // WORLD_SIZE] * WORLD_SIZE
        assert epoch["samples"] == TRAIN_ROWS
        assert all(n["rss_mb"] > 0 for n in workers)


@pytest.mark.parametrize("servers", [1, 2], ids=["one-server", "two-shards"])
def test_synchronous_parameter_server_takes_the_ddp_step(
    servers: int, splits: DatasetSplits, arch: Architecture, tmp_path: Path
) -> None:
    lead = _run(_ps(servers), splits, arch, tmp_path)
    _assert_same_weights(_single_process_weights(splits, arch), lead["weights"])
    roles = [n["role"] for n in lead["history"][-1]["nodes"]]
    assert roles == ["parameter_server"] * servers + ["worker"] * WORLD_SIZE


def test_a_parameter_server_trains_a_cnn_layer_spec_with_the_single_process_step(
    splits: DatasetSplits, tmp_path: Path
) -> None:
    """Any network the layer spec builds, not only the MLP: its parameters sharded over two
    servers (the convolutions' and the dense layers' land on different ones)."""
    layers = TypeAdapter(list[Layer]).validate_python(
        [
            {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": "relu"},
            {"type": "maxpool2d", "kernel_size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 16, "activation": "silu"},
        ]
    )
    cnn = Architecture(
        input_dim=splits.num_features,
        num_classes=splits.num_classes,
        layers=layers,
        input_shape=[1, 8, 8],
    )
    lead = _run(_ps(2), splits, cnn, tmp_path)
    _assert_same_weights(_single_process_weights(splits, cnn), lead["weights"])


@pytest.mark.parametrize("job", [DDP, _ps(2)], ids=["ddp", "parameter-server"])
def test_a_regression_network_trains_distributed_with_the_single_process_step(
    job: dict[str, Any], tmp_path: Path
) -> None:
    """A regression network (one output, MSE on the standardized target) under DDP and
    through two parameter servers takes the single-process step, and learns the target."""
    data = load_splits("synthetic_regression?rows=800&features=10&seed=1", seed=3)
    regression = dataclasses.replace(
        data, x_train=data.x_train[:TRAIN_ROWS], y_train=data.y_train[:TRAIN_ROWS]
    )
    arch = design_architecture(regression.num_features, regression.num_classes, [32])
    assert arch.task == "regression" and arch.num_outputs == 1
    lead = _run(job, regression, arch, tmp_path)
    _assert_same_weights(_single_process_weights(regression, arch), lead["weights"])
    last = lead["history"][-1]
    assert last["val_accuracy"] is None and last["train_accuracy"] is None
    first = lead["history"][0]
    assert last["val_loss"] < first["val_loss"]
    assert last["val_r2"] > 0.8, last
    assert last["val_rmse"] < first["val_rmse"]
    # The figures are of the real target: its RMSE over its spread is what R² leaves.
    target = regression.target_normalization
    assert target is not None
    y_val = regression.y_val.astype("float64")
    assert last["val_r2"] == pytest.approx(1 - last["val_rmse"] ** 2 / y_val.var(), abs=1e-6)


def test_async_with_no_staleness_is_the_synchronous_step(
    splits: DatasetSplits, arch: Architecture, tmp_path: Path
) -> None:
    lead = _run(_ps(1, "async", 0), splits, arch, tmp_path)
    _assert_same_weights(_single_process_weights(splits, arch), lead["weights"])
    log = torch.load(tmp_path / "server-0.pt", weights_only=True)["log"]
    assert all(clock == version for _, clock, version in log)


def test_async_workers_never_run_past_the_staleness_bound(
    splits: DatasetSplits, arch: Architecture, tmp_path: Path
) -> None:
    lead = _run(_ps(2, "async", 2), splits, arch, tmp_path)
    for server in (0, 1):
        log = torch.load(tmp_path / f"server-{server}.pt", weights_only=True)["log"]
        for worker in (2, 3):
            assert sorted(clock for rank, clock, _ in log if rank == worker) == list(range(STEPS))
        assert max(clock - version for _, clock, version in log) <= 2
    # The trained weights still classify: the stale steps did not wreck the run.
    model = build_model(arch)
    model.load_state_dict(lead["weights"])
    with torch.no_grad():
        predicted = model(torch.from_numpy(splits.x_val)).argmax(dim=1)
    accuracy = (predicted == torch.from_numpy(splits.y_val)).float().mean().item()
    assert accuracy > 0.85


@pytest.mark.parametrize(
    ("mode", "snapshot_epoch"),
    [("async", 1), ("sync", CONFIG.epochs)],
    ids=["mid-run-async", "run-ended-sync"],
)
def test_a_parameter_server_job_resumes_wider_from_a_narrower_runs_snapshot(
    mode: str, snapshot_epoch: int, splits: DatasetSplits, arch: Architecture, tmp_path: Path
) -> None:
    """A job that went on with one worker takes a replacement back in: every rank resumes
    from the one worker's snapshot. A snapshot of the run's last epoch (the run ended as the
    wider attempt began) ends every rank at once, the servers with no step to serve."""
    seed_everything(CONFIG.seed)
    narrow = Trainer(build_model(arch), arch, splits, CONFIG.model_copy(update={"epochs": 1}))
    narrow.fit()
    if snapshot_epoch == CONFIG.epochs:
        narrow.config = CONFIG
        narrow.fit(resume_from=narrow.checkpoint())
    snapshot = narrow.checkpoint()
    assert snapshot.epoch == snapshot_epoch

    lead = _run(_ps(1, mode), splits, arch, tmp_path, Attempt(resume_from=snapshot))
    epochs = [m["epoch"] for m in lead["history"]]
    assert epochs == list(range(1, CONFIG.epochs + 1))
    for metrics in lead["history"][snapshot_epoch:]:  # the wider attempt's own epochs
        assert [n["role"] for n in metrics["nodes"]] == ["parameter_server", "worker", "worker"]
        assert metrics["samples"] == TRAIN_ROWS
    if snapshot_epoch == CONFIG.epochs:
        _assert_same_weights(snapshot.model_state, lead["weights"])


def test_a_surviving_parameter_server_resumes_with_its_own_optimizer_state(
    splits: DatasetSplits, arch: Architecture, tmp_path: Path
) -> None:
    """A job that is run again from its epoch-1 snapshot (as after a worker's loss and its
    replacement) on a server that kept its Adam moments trains the uninterrupted run's
    weights; a server that starts its moments afresh does not."""
    assert CONFIG.optimizer == "adam"
    whole = _run(_ps(1), splits, arch, tmp_path / "whole")
    first = tmp_path / "first"
    _run(_ps(1), splits, arch, first, Attempt(CONFIG.model_copy(update={"epochs": 1})))
    snapshot = pickle.loads((first / "snapshot.pkl").read_bytes())
    kept = pickle.loads((first / "server-state-0.pkl").read_bytes())
    assert snapshot.epoch == kept.epoch == 1

    resumed = _run(_ps(1), splits, arch, tmp_path / "kept", Attempt(CONFIG, snapshot, kept))
    _assert_same_weights(whole["weights"], resumed["weights"])
    afresh = _run(_ps(1), splits, arch, tmp_path / "afresh", Attempt(CONFIG, snapshot))
    assert not all(
        torch.allclose(t, afresh["weights"][n], atol=1e-5) for n, t in whole["weights"].items()
    )
