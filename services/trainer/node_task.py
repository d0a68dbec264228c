"""The `train` task, run inside a node process (see shared/node_tasks.py): one process of
the job, under the workflow's strategy (shared/ml/strategies.py).

For `ddp` and `parameter_server` every process of the job gets this task with its rank; they
join one process group at the cluster's rendezvous (a prefix of the coordinator's warm
TCPStore, per job) and leave it however the task ends. The lead (the first worker) publishes
a `TrainingProgress` event after every epoch, with every process's own figures, saves a
resumable checkpoint every `checkpoint_every` epochs (and after the last one), and saves the
best validation epoch's model as safetensors; it reports the result as one
`TrainingFinished` event. Any other rank reports only a failure, so the job fails as soon as
any of its processes does.

Every worker keeps its state after each epoch in memory (`SNAPSHOTS`), and every parameter
server its optimizer's (`SERVER_STATES`). When the trainer runs the job again after losing a
node (the next `attempt`, on the nodes left), the ranks agree on the newest state any of them
holds, a surviving rank's snapshot or the last checkpoint, and go on from there: the work
lost is at most the epoch in progress.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from shared.contracts import (
    EpochReport,
    JobPlacement,
    TrainingFinished,
    TrainingProgress,
    TrainResult,
    TrainTask,
    node_totals,
)
from shared.node_tasks import TaskContext
from shared.spec import TEST_FRACTION, VAL_FRACTION, TrainingSpec
from shared.telemetry import step

if TYPE_CHECKING:
    from shared.ml.architecture import Architecture
    from shared.ml.checkpoint import TrainingCheckpoint
    from shared.ml.data import DatasetSplits
    from shared.ml.parameter_server import ServerState
    from shared.ml.strategies import Placement
    from shared.ml.training import TrainConfig

logger = logging.getLogger(__name__)


T = TypeVar("T")


class LatestPerJob(Generic[T]):
    """Job id -> this process's state of the job after its latest epoch; for the newest
    `jobs` jobs only, so a long-lived node does not keep every model it ever trained."""

    def __init__(self, jobs: int) -> None:
        self._jobs = jobs
        self._states: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()  # kept from the task's thread, read by the next task

    def keep(self, job_id: uuid.UUID, state: T) -> None:
        with self._lock:
            self._states[str(job_id)] = state
            self._states.move_to_end(str(job_id))
            while len(self._states) > self._jobs:
                self._states.popitem(last=False)

    def get(self, job_id: uuid.UUID) -> T | None:
        with self._lock:
            return self._states.get(str(job_id))


SNAPSHOTS: LatestPerJob[TrainingCheckpoint] = LatestPerJob(jobs=2)
SERVER_STATES: LatestPerJob[ServerState] = LatestPerJob(jobs=2)


class TrainingCancelled(Exception):
    """Raised between epochs once the node has been asked to cancel the task."""


class JobAborted(Exception):
    """Another rank of the job gave up before the job's process group formed."""


@dataclass
class RunRecord:
    """What a run has produced so far, reported even when it ends early."""

    checkpoints: list[str] = field(default_factory=list)
    history: list[EpochReport] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)  # the task's start

    def partial(self, seconds: float, *, cancelled: bool = False) -> TrainResult:
        return TrainResult(
            checkpoints=self.checkpoints, history=self.history, seconds=seconds, cancelled=cancelled
        )


def run_training(payload: dict[str, Any], context: TaskContext) -> None:
    started = time.perf_counter()
    job: TrainTask | None = None
    record = RunRecord()
    try:
        job = TrainTask.model_validate(payload)
        result = _train(job, context, record)
        if result is None:
            return  # a rank other than the lead: the lead reports the job's result
    except TrainingCancelled as cancelled:
        seconds = time.perf_counter() - started
        result = record.partial(seconds, cancelled=True)
        error = context.cancel_reason or str(cancelled)  # set when its deadline stopped it
        _finish(context, payload, job, succeeded=False, error=error, result=result)
        return
    except Exception as exc:
        logger.exception("training task failed")
        result = record.partial(time.perf_counter() - started)
        error = f"{type(exc).__name__}: {exc}"
        _finish(context, payload, job, succeeded=False, error=error, result=result)
        return
    _finish(context, payload, job, succeeded=True, result=result)


def _train(job: TrainTask, context: TaskContext, record: RunRecord) -> TrainResult | None:
    # Imported here: a node loads torch once, on its first task, and web processes never do.
    import torch

    from shared.ml.architecture import Architecture
    from shared.ml.data import load_splits

    torch.set_num_threads(1)
    spec = job.spec
    if context.cancelled.is_set():
        raise TrainingCancelled("cancelled before training started")
    architecture = Architecture.model_validate(job.architecture)
    with step("load dataset", dataset=spec.dataset):
        splits = load_splits(
            spec.dataset,
            seed=spec.training.seed,
            val_fraction=VAL_FRACTION,
            test_fraction=TEST_FRACTION,
        )
    with _job_group(job, context):
        return _run(job, context, record, architecture, splits)


@contextlib.contextmanager
def _job_group(job: TrainTask, context: TaskContext) -> Iterator[None]:
    """The job's process group (none for `single`), left however the task ends."""
    placement = job.placement
    if placement is None:
        yield
        return
    from services.cluster.node.rendezvous import group_store
    from shared.ml.distributed import joined_group

    meet = placement.rendezvous
    # Each attempt meets under its own keys: a rank of a broken earlier one counts for none.
    prefix = f"job-{job.job_id}" + (f"-{job.attempt}" if job.attempt else "")
    # NCCL moves CUDA tensors: DDP's gradients on GPUs. The parameter server's point-to-point
    # traffic is CPU tensors, on gloo.
    backend = meet.backend if job.spec.training.strategy == "ddp" else "gloo"
    with contextlib.ExitStack() as group:
        with step("join process group", rank=placement.rank, backend=backend):
            store = group_store(meet.host, meet.port, prefix, placement.timeout_s)
            _wait_for_every_rank(store, placement, context)
            group.enter_context(
                joined_group(
                    store,
                    placement.rank,
                    placement.world_size,
                    timeout_s=placement.timeout_s,
                    backend=backend,
                )
            )
        yield


ARRIVED_KEY, ABORTED_KEY = "nexus/arrived", "nexus/aborted"


def _wait_for_every_rank(store: Any, placement: JobPlacement, context: TaskContext) -> None:
    """Meet the job's other ranks at its store before joining the process group, whose own
    rendezvous cannot be interrupted: a cancel (the trainer cancels the ranks that started
    when another could not), or another rank giving up, ends the wait at once; the job's
    timeout ends it otherwise."""
    store.add(ARRIVED_KEY, 1)
    deadline = time.monotonic() + placement.timeout_s
    while (arrived := store.add(ARRIVED_KEY, 0)) < placement.world_size:
        if context.cancelled.is_set():
            store.set(ABORTED_KEY, context.node.node_id)
            raise TrainingCancelled("cancelled at the rendezvous")
        if store.check([ABORTED_KEY]):
            quitter = store.get(ABORTED_KEY).decode()
            raise JobAborted(f"the rank on {quitter} left the rendezvous")
        if time.monotonic() > deadline:
            store.set(ABORTED_KEY, context.node.node_id)
            raise TimeoutError(
                f"{arrived} of {placement.world_size} ranks reached the rendezvous within "
                f"{placement.timeout_s:g} s"
            )
        time.sleep(0.005)


def _run(
    job: TrainTask,
    context: TaskContext,
    record: RunRecord,
    architecture: Architecture,
    splits: DatasetSplits,
) -> TrainResult | None:
    from shared.ml.checkpoint import save_checkpoint, save_model
    from shared.ml.strategies import Placement, run_rank
    from shared.ml.training import EpochMetrics

    spec, t = job.spec, job.spec.training
    config = train_config(t)
    placement = Placement()
    labels = [context.node.node_id]
    if job.placement is not None:
        placement = Placement(
            strategy=t.strategy,
            rank=job.placement.rank,
            world_size=job.placement.world_size,
            servers=job.placement.servers,
            ps_mode=t.ps_mode,
            max_staleness=t.max_staleness,
            local_rank=job.placement.local_rank,
        )
        labels = job.placement.members
    checkpoints = record.checkpoints

    def on_epoch(metrics: EpochMetrics) -> None:
        report = EpochReport.model_validate(metrics.to_dict())
        record.history.append(report)
        context.publish_soon(
            TrainingProgress(
                workflow_id=job.workflow_id,
                tenant_id=job.tenant_id,
                job_id=job.job_id,
                attempt=job.attempt,
                **report.model_dump(),
            )
        )

    def on_checkpoint(checkpoint: TrainingCheckpoint) -> None:
        url = job.artifacts.checkpoint(checkpoint.epoch)
        save_checkpoint(url, checkpoint)
        checkpoints.append(url)

    resume_from = _resume_point(job, placement) if job.attempt or job.resume_from else None
    with step("train", strategy=t.strategy, rank=placement.rank):
        run = run_rank(
            placement,
            splits,
            architecture,
            config,
            on_epoch=on_epoch,
            on_checkpoint=on_checkpoint,
            labels=labels,
            # A cancel is agreed at the end of an epoch, so every rank stops there together.
            stop_requested=context.cancelled.is_set,
            resume_from=resume_from,
            on_snapshot=lambda snapshot: SNAPSHOTS.keep(job.job_id, snapshot),
            server_state=SERVER_STATES.get(job.job_id) if resume_from is not None else None,
            on_server_state=lambda state: SERVER_STATES.keep(job.job_id, state),
        )
    if not placement.is_lead:
        return None
    assert run.trainer is not None and run.result is not None
    result = run.result
    if not checkpoints or not checkpoints[-1].endswith(f"epoch-{result.final.epoch:04d}"):
        on_checkpoint(run.trainer.checkpoint())
    if context.cancelled.is_set():
        # Checkpointed above, so the cancelled run can be resumed from where it stopped.
        raise TrainingCancelled(f"cancelled after epoch {result.final.epoch}")
    # The model kept is the best validation epoch's, not the last one trained.
    run.model.cpu().load_state_dict(run.trainer.best_weights())
    best = result.best
    history = [EpochReport.model_validate(m.to_dict()) for m in result.history]
    summary: dict[str, Any] = {
        "converged": result.converged,
        "convergence_reason": result.convergence_reason,
        "converged_epoch": result.converged_epoch,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "epochs_run": len(result.history),
        "seconds": result.seconds,
        # From the task's start to the first step: data, the process group, the model.
        "setup_seconds": run.fit_started - record.started,
    }
    nodes = node_totals(history)
    with step("save model"):
        save_model(
            job.artifacts.models,
            run.model,
            architecture,
            splits.normalization,
            class_names=splits.class_names,
            target_normalization=splits.target_normalization,
            metrics={**{k: v for k, v in best.to_dict().items() if k != "nodes"}, **summary},
            extra_metadata={
                "dataset": spec.dataset,
                "split_seed": t.seed,
                "val_fraction": VAL_FRACTION,
                "test_fraction": TEST_FRACTION,
                "job_id": str(job.job_id),
                "workflow_id": str(job.workflow_id),
                "train_config": config.model_dump(mode="json"),
                "strategy": _strategy_of(placement),
                "nodes": nodes,
            },
        )
    return TrainResult(
        model_uri=job.artifacts.models,
        checkpoints=checkpoints,
        history=history,
        final=EpochReport.model_validate(result.final.to_dict()),
        kept=EpochReport.model_validate(best.to_dict()),
        nodes=nodes,
        **summary,
    )


def _resume_point(job: TrainTask, placement: Placement) -> TrainingCheckpoint | None:
    """The newest state of the job any rank of this attempt holds: every rank offers the
    epoch of its snapshot, the holder of the newest sends it to all (one broadcast), unless
    the checkpoint named by the trainer is as new; None to start afresh."""
    import torch.distributed as dist

    from shared.ml.checkpoint import load_checkpoint

    saved_epoch = checkpoint_epoch(job.resume_from) if job.resume_from else 0
    mine = SNAPSHOTS.get(job.job_id)
    epochs: list[int] = [mine.epoch if mine else -1] * placement.world_size
    if placement.world_size > 1:
        dist.all_gather_object(epochs, epochs[0])
    holder = max(range(len(epochs)), key=lambda rank: epochs[rank])
    newest = epochs[holder]
    if newest >= max(saved_epoch, 1):
        if placement.world_size == 1:
            return mine
        shared = [mine if placement.rank == holder else None]
        dist.broadcast_object_list(shared, src=holder)
        logger.info("job %s resumes from epoch %d held by rank %d", job.job_id, newest, holder)
        return shared[0]
    if job.resume_from:
        logger.info("job %s resumes from checkpoint %s", job.job_id, job.resume_from)
        return load_checkpoint(job.resume_from)
    return None


def checkpoint_epoch(url: str) -> int:
    """The epoch a checkpoint URL names (`.../epoch-0007` -> 7; see TrainArtifacts)."""
    return int(url.rstrip("/").rsplit("epoch-", 1)[1])


def train_config(t: TrainingSpec) -> TrainConfig:
    """The spec's training section as shared.ml's TrainConfig: every field they share (the
    strategy and its settings are not among them: they decide where the steps run, not what
    they compute). The generated train.py reads training.json the same way."""
    from shared.ml.training import TrainConfig

    return TrainConfig(**t.model_dump(include=set(TrainConfig.model_fields)))


def _strategy_of(placement: Placement) -> dict[str, Any]:
    return {
        "strategy": placement.strategy,
        "world_size": placement.world_size,
        "workers": placement.workers,
        "parameter_servers": placement.servers,
        "ps_mode": placement.ps_mode if placement.servers else None,
        "max_staleness": placement.max_staleness if placement.servers else None,
    }


def _finish(
    context: TaskContext,
    payload: dict[str, Any],
    job: TrainTask | None,
    *,
    succeeded: bool,
    result: TrainResult,
    error: str | None = None,
) -> None:
    # An invalid payload still names its job when it can, so the service can close it.
    named = {"job_id", "workflow_id", "tenant_id", "attempt"}
    ids = job.model_dump(include=named) if job else payload
    if not all(isinstance(ids.get(k), str | uuid.UUID) for k in ("job_id", "workflow_id")):
        logger.error("a train task named no job to report to: %s", error)
        return
    context.publish(
        TrainingFinished(
            workflow_id=ids["workflow_id"],
            tenant_id=ids["tenant_id"],
            job_id=ids["job_id"],
            attempt=ids.get("attempt") or 0,
            node_id=context.node.node_id,
            succeeded=succeeded,
            error=error,
            result=result,
        )
    )
