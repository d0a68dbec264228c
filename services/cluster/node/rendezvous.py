"""torch, loaded once per node and only when a task needs it; the `rendezvous` task that makes
this node the cluster's coordinator (the TCPStore every process group of the cluster meets
at); and the `connect` task: a gloo group there plus an all_reduce that proves every rank can
reach every other."""

from __future__ import annotations

import sys
import threading
import time
from datetime import timedelta
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Held while torch is imported: two threads importing it at once (the pre-load and a
# shutdown) can abort the process.
_torch_lock = threading.Lock()


def ensure_torch() -> ModuleType:
    """Import torch on first use (~1 s, ~285 MB) with one thread per node process."""
    with _torch_lock:
        if "torch" not in sys.modules:
            import torch

            # Nodes share few cores; more threads per rank make small models slower.
            torch.set_num_threads(1)
        return sys.modules["torch"]


def prewarm_training_stack() -> None:
    """Import what a `train` or `validate` task will need (shared.ml, scikit-learn's
    datasets), so the first job after the topology check starts in milliseconds rather than
    seconds. Run in a background thread while the node waits for its first job; a task that
    arrives meanwhile simply waits on the import lock."""
    torch = ensure_torch()
    import sklearn.datasets  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    import shared.ml.checkpoint  # noqa: F401
    import shared.ml.data  # noqa: F401
    import shared.ml.strategies  # noqa: F401
    from shared.ml.runtimes import prewarm_onnx

    prewarm_onnx()  # the trained model is saved with its ONNX export

    # The first optimizer a process builds imports torch's compiler stack: over a second.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], foreach=True)


class ConnectPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    master_addr: str = Field(min_length=1, max_length=255)
    master_port: int = Field(ge=1, le=65535)
    world_size: int = Field(ge=1, le=256)
    rank: int = Field(ge=0)
    # Keys of this check in the coordinator's store, apart from every other group's.
    prefix: str = Field(default="connect", min_length=1, max_length=200)
    timeout_s: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _rank_in_world(self) -> ConnectPayload:
        if self.rank >= self.world_size:
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}")
        return self


# The TCPStore this node hosts once the cluster elected it coordinator: it stays up for the
# node's life, and each process group (a connect check, a job) meets under its own prefix.
_hosted_store: Any = None
_hosted_host = ""
_hosted_lock = threading.Lock()


def host_rendezvous(host: str) -> dict[str, Any]:
    """Become the cluster's rendezvous: open (once) a TCPStore on a free port; reply where."""
    global _hosted_store, _hosted_host
    ensure_torch()
    import torch.distributed as dist

    with _hosted_lock:
        if _hosted_store is None:
            # Port 0: the operating system picks a free one on this host, so nothing needs
            # to know this host's ports in advance (the node may run on another machine).
            _hosted_store = dist.TCPStore(
                host, 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=30)
            )
            _hosted_host = host
        port = int(_hosted_store.port)
    return {"ok": True, "host": host, "port": port}


def group_store(master_addr: str, master_port: int, prefix: str, timeout_s: float) -> Any:
    """The store one process group meets at: this node's own hosted store when it is the
    coordinator, else a client of the coordinator's; namespaced by `prefix`."""
    ensure_torch()
    import torch.distributed as dist

    with _hosted_lock:
        hosted = _hosted_store
    if hosted is not None and (_hosted_host, int(hosted.port)) == (master_addr, master_port):
        base = hosted
    else:
        base = dist.TCPStore(
            master_addr, master_port, is_master=False, timeout=timedelta(seconds=timeout_s)
        )
    return dist.PrefixStore(f"{prefix}/", base)


def connect(payload: ConnectPayload) -> dict[str, Any]:
    """Join a gloo group at the coordinator, all_reduce a ones tensor, leave. Also says how
    many GPUs this node has, so the cluster knows which backend its jobs can use.
    Blocking: run in a thread."""
    torch = ensure_torch()
    import torch.distributed as dist

    from shared.ml.distributed import joined_group

    started = time.perf_counter()
    store = group_store(payload.master_addr, payload.master_port, payload.prefix, payload.timeout_s)
    with joined_group(
        store, payload.rank, payload.world_size, timeout_s=payload.timeout_s, backend="gloo"
    ):
        tensor = torch.ones(1)
        dist.all_reduce(tensor)
        total = int(tensor.item())
    return {
        "ok": total == payload.world_size,
        "sum": total,
        "world_size": payload.world_size,
        "rank": payload.rank,
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "seconds": round(time.perf_counter() - started, 4),
    }


def destroy_process_group_if_any() -> None:
    """On shutdown, leave a process group a task left behind (only if torch was ever loaded).
    While torch is still being imported no task has run, so there is no group to leave."""
    if not _torch_lock.acquire(blocking=False):
        return
    try:
        if "torch" not in sys.modules:
            return
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    finally:
        _torch_lock.release()
