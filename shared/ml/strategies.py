"""One process of a training job, under any strategy: `single`, `ddp` or `parameter_server`.

The same code runs inside a cluster's node (services/trainer/node_task.py, in a process group
the node joined) and in a generated project's `train.py` (under torchrun), so both train the
same weights. Ranks are laid out as `Placement` says: parameter servers first (ranks
0..S-1), then the workers; the first worker is the *lead*, the only rank that reports
progress, writes checkpoints and saves the model.

After every epoch all ranks meet once (`EpochSync`, one small all_gather): each contributes
its own figures (rows trained, samples/s, CPU, resident memory) and the lead's decision to go
on or stop is the job's, so no rank is ever left alone in a collective. Workers of `ddp` and
of a parameter server all end an epoch on the same weights, so their validation figures and
their decisions agree anyway; the lead's decision is taken for robustness.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psutil
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from shared.ml.architecture import Architecture, build_model
from shared.ml.checkpoint import TrainingCheckpoint, unwrap_model
from shared.ml.data import DatasetSplits
from shared.ml.distributed import shard_order
from shared.ml.parameter_server import (
    AsyncParameterServer,
    AsyncWorkerStep,
    ServerState,
    SyncParameterServer,
    SyncPush,
    owned_by,
    shard_owners,
    steps_per_epoch,
)
from shared.ml.schedule import LearningRateSchedule
from shared.ml.training import (
    CheckpointHook,
    EpochCallback,
    EpochMetrics,
    TrainConfig,
    Trainer,
    TrainResult,
    resumes_finished,
    seed_everything,
)

Strategy = Literal["single", "ddp", "parameter_server"]
PsMode = Literal["sync", "async"]
_MB = 1024 * 1024


@dataclass(frozen=True)
class Placement:
    """Where this process sits in its job."""

    strategy: Strategy = "single"
    rank: int = 0
    world_size: int = 1
    servers: int = 0  # ranks 0..servers-1 are parameter servers
    ps_mode: PsMode = "sync"
    max_staleness: int = 0
    local_rank: int | None = None  # among the job's workers on this host; None: worker_index

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is outside world size {self.world_size}")
        if (self.strategy == "parameter_server") != (self.servers > 0):
            raise ValueError("parameter servers are part of the parameter_server strategy only")
        if self.workers < 1:
            raise ValueError("a job needs at least one worker")
        if self.strategy == "single" and self.world_size != 1:
            raise ValueError("strategy single runs in one process")

    @property
    def workers(self) -> int:
        return self.world_size - self.servers

    @property
    def is_server(self) -> bool:
        return self.rank < self.servers

    @property
    def worker_index(self) -> int:
        """This worker's shard of the data (0..workers-1)."""
        return self.rank - self.servers

    @property
    def lead_rank(self) -> int:
        return self.servers

    @property
    def is_lead(self) -> bool:
        return self.rank == self.lead_rank

    def role_of(self, rank: int) -> str:
        return "parameter_server" if rank < self.servers else "worker"


class ProcessMeter:
    """This process's CPU use since the last sample and its resident memory."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only starts the interval

    def sample(self) -> tuple[float, float]:
        return self._process.cpu_percent(None), self._process.memory_info().rss / _MB


@dataclass(frozen=True)
class AgreedEpoch:
    stop: bool
    val_loss: float  # the lead's
    nodes: list[dict[str, Any]]


class EpochSync:
    """The job's one meeting per epoch: every rank's figures, and the lead's decision."""

    def __init__(
        self,
        placement: Placement,
        labels: Sequence[str] | None = None,
        stop_requested: Callable[[], bool] | None = None,
    ) -> None:
        self._placement = placement
        self._labels = list(labels) if labels is not None else None
        self._stop_requested = stop_requested
        self._meter = ProcessMeter()
        # NCCL gathers CUDA tensors only.
        self._device = job_device(placement)

    def exchange(
        self, *, would_stop: bool, val_loss: float, samples: int, samples_per_second: float
    ) -> AgreedEpoch:
        cpu, rss = self._meter.sample()
        if self._stop_requested is not None and self._stop_requested():
            would_stop = True  # a cancel: every rank stops after this epoch, together
        # One row per rank: would_stop, val_loss, samples, samples/s, cpu %, rss MB.
        mine = torch.tensor(
            [float(would_stop), val_loss, samples, samples_per_second, cpu, rss],
            dtype=torch.float64,
            device=self._device,
        )
        gathered = [mine]
        if self._placement.world_size > 1:
            world = self._placement.world_size
            gathered = [torch.empty_like(mine) for _ in range(world)]
            dist.all_gather(gathered, mine)
            gathered = [row.cpu() for row in gathered]
        lead = gathered[self._placement.lead_rank]
        return AgreedEpoch(
            stop=bool(lead[0].item()),
            val_loss=float(lead[1].item()),
            nodes=[self._node(rank, row) for rank, row in enumerate(gathered)],
        )

    def _node(self, rank: int, row: torch.Tensor) -> dict[str, Any]:
        _, _, samples, rate, cpu, rss = row.tolist()
        node: dict[str, Any] = {
            "rank": rank,
            "role": self._placement.role_of(rank),
            "samples": int(samples),
            "samples_per_second": round(rate, 1),
            "cpu_percent": round(cpu, 1),
            "rss_mb": round(rss, 1),
        }
        if self._labels is not None:
            node["node_id"] = self._labels[rank]
        return node

    def coordinate(self, metrics: EpochMetrics, would_stop: bool) -> tuple[EpochMetrics, bool]:
        """The Trainer's hook on a worker: the epoch's metrics become the job's (samples/s
        summed over the workers, every process's figures), and the lead's decision."""
        agreed = self.exchange(
            would_stop=would_stop,
            val_loss=metrics.val_loss,
            samples=metrics.samples or 0,
            samples_per_second=metrics.samples_per_second or 0.0,
        )
        workers = [n for n in agreed.nodes if n["role"] == "worker"]
        job = dataclasses.replace(
            metrics,
            samples=sum(n["samples"] for n in workers),
            samples_per_second=sum(n["samples_per_second"] for n in workers),
            nodes=agreed.nodes,
        )
        return job, agreed.stop


@dataclass
class RankRun:
    """What one process ends with. `model` is plain (unwrapped) and holds the last epoch's
    weights; a worker's `trainer` has the best epoch's (`best_weights()`)."""

    placement: Placement
    model: nn.Module
    fit_started: float = 0.0  # time.perf_counter() as the first epoch began
    trainer: Trainer | None = None
    result: TrainResult | None = None
    version_log: list[tuple[int, int, int]] = field(default_factory=list)


def run_rank(
    placement: Placement,
    splits: DatasetSplits,
    architecture: Architecture,
    config: TrainConfig,
    *,
    on_epoch: EpochCallback | None = None,
    on_checkpoint: CheckpointHook | None = None,
    labels: Sequence[str] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    resume_from: TrainingCheckpoint | None = None,
    on_snapshot: CheckpointHook | None = None,
    server_state: ServerState | None = None,
    on_server_state: Callable[[ServerState], None] | None = None,
) -> RankRun:
    """Train this rank's part of the job, in the process group (if any) the caller joined.
    Every rank builds the same seeded initial model; the lead alone gets the callbacks.
    `stop_requested` (read on the lead after each epoch) ends the job early on every rank;
    `labels` name the ranks in the per-process figures. `resume_from` (the same on every
    rank) continues a run after its last completed epoch; `on_snapshot` gets every worker's
    state after each epoch, `on_server_state` a parameter server's, which it resumes with
    (`server_state`) when it is of the same server at the epoch resumed from."""
    if placement.world_size > 1 and not dist.is_initialized():
        raise RuntimeError("join the job's process group before running a rank of it")
    seed_everything(config.seed)
    model = build_model(architecture)
    sync = EpochSync(placement, labels, stop_requested if placement.is_lead else None)
    if placement.is_server:
        fit_started = time.perf_counter()
        log = _serve(
            placement,
            model,
            config,
            len(splits.x_train),
            sync,
            resume_from,
            (server_state, on_server_state),
        )
        return RankRun(placement, model, fit_started, version_log=log)
    trainer = _worker_trainer(
        placement,
        model,
        splits,
        architecture,
        config,
        sync,
        on_epoch=on_epoch if placement.is_lead else None,
        on_checkpoint=on_checkpoint if placement.is_lead else None,
        on_snapshot=on_snapshot,
    )
    fit_started = time.perf_counter()
    result = trainer.fit(resume_from=resume_from)
    return RankRun(placement, unwrap_model(trainer.model), fit_started, trainer, result)


def _worker_trainer(
    placement: Placement,
    model: nn.Module,
    splits: DatasetSplits,
    architecture: Architecture,
    config: TrainConfig,
    sync: EpochSync,
    *,
    on_epoch: EpochCallback | None,
    on_checkpoint: CheckpointHook | None,
    on_snapshot: CheckpointHook | None,
) -> Trainer:
    hooks: dict[str, Any] = {
        "on_epoch": on_epoch,
        "on_checkpoint": on_checkpoint,
        "on_snapshot": on_snapshot,
        "coordinate": sync.coordinate,
    }
    if placement.strategy == "single":
        # The single-process order (seed, epoch), as every earlier run of the platform had.
        return Trainer(model, architecture, splits, config, **hooks)
    order = shard_order(
        len(splits.x_train),
        seed=config.seed,
        rank=placement.worker_index,
        world_size=placement.workers,
    )
    hooks["seed_offset"] = placement.worker_index
    if placement.strategy == "ddp":
        device = job_device(placement)
        if device.type == "cuda":
            wrapped = DistributedDataParallel(model.to(device), device_ids=[device.index])
        else:
            wrapped = DistributedDataParallel(model)
        return Trainer(
            wrapped, architecture, splits, config, epoch_sampler=order, device=device, **hooks
        )
    parameters = list(model.parameters())
    owners = shard_owners(parameters, range(placement.servers))
    step = (
        SyncPush(parameters, owners)
        if placement.ps_mode == "sync"
        else AsyncWorkerStep(parameters, owners)
    )
    return Trainer(
        model, architecture, splits, config, epoch_sampler=order, apply_gradients=step, **hooks
    )


def job_device(placement: Placement) -> torch.device:
    """Where a DDP worker computes: a GPU of its own when the job's group runs on NCCL (every
    worker has CUDA), else the CPU. The parameter server always moves CPU tensors on gloo."""
    if placement.strategy != "ddp" or not dist.is_initialized():
        return torch.device("cpu")
    if dist.get_backend() != "nccl":
        return torch.device("cpu")
    # Workers sharing a host take its GPUs in turn; the cluster chose NCCL only when there
    # is one GPU for each (services/cluster/service/topology.py).
    local = placement.worker_index if placement.local_rank is None else placement.local_rank
    return torch.device("cuda", local)


def _serve(
    placement: Placement,
    model: nn.Module,
    config: TrainConfig,
    train_rows: int,
    sync: EpochSync,
    resume_from: TrainingCheckpoint | None,
    own_state: tuple[ServerState | None, Callable[[ServerState], None] | None],
) -> list[tuple[int, int, int]]:
    """A parameter server's epochs: serve one epoch of steps, meet the workers, go on until
    the lead says stop. It runs its own copy of the workers' learning-rate schedule, fed the
    lead's validation loss, so the rates the workers report are the ones applied here. A
    resumed run starts from the snapshot's weights, epoch and schedule, and with the
    optimizer this server had at that epoch when it kept it (it survived the loss); else
    (a replacement server, a resume from a checkpoint) the moments start afresh."""
    kept, on_state = own_state
    epoch = 0
    schedule = LearningRateSchedule(config)
    if resume_from is not None and resumes_finished(resume_from, config):
        return []  # the workers stop at once too: the run had ended as this attempt began
    if resume_from is not None:
        model.load_state_dict(resume_from.model_state)
        epoch = resume_from.epoch
        schedule.load_state_dict(resume_from.progress.get("lr_schedule", {}))
    parameters = list(model.parameters())
    owners = shard_owners(parameters, range(placement.servers))
    optimizer = config.build_optimizer(owned_by(parameters, owners, placement.rank))
    if (
        resume_from is not None
        and kept is not None
        and (kept.epoch, kept.rank, kept.servers)
        == (resume_from.epoch, placement.rank, placement.servers)
    ):
        optimizer.load_state_dict(kept.optimizer_state)
    steps = steps_per_epoch(train_rows, placement.workers, config.batch_size)
    workers = range(placement.servers, placement.world_size)
    server: SyncParameterServer | AsyncParameterServer
    if placement.ps_mode == "sync":
        server = SyncParameterServer(
            parameters, owners, optimizer, rank=placement.rank, workers=placement.workers
        )
    else:
        server = AsyncParameterServer(
            owned_by(parameters, owners, placement.rank),
            optimizer,
            workers=workers,
            max_staleness=placement.max_staleness,
        )
    while True:
        epoch += 1
        for group in optimizer.param_groups:
            group["lr"] = schedule.rate(epoch)
        server.serve(steps)
        if on_state is not None:
            # state_dict() hands out the live moment tensors; later steps would change them.
            moments = copy.deepcopy(optimizer.state_dict())
            on_state(ServerState(epoch, placement.rank, placement.servers, moments))
        agreed = sync.exchange(
            would_stop=False, val_loss=math.nan, samples=0, samples_per_second=0.0
        )
        schedule.observe(agreed.val_loss)
        if agreed.stop:
            break
    return server.log if isinstance(server, AsyncParameterServer) else []
