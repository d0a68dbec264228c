"""torch, loaded once per node and only when a task needs it, and the `connect` task: a gloo
rendezvous plus an all_reduce that proves every rank can reach every other."""

from __future__ import annotations

import sys
import threading
import time
from datetime import timedelta
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

_torch_lock = threading.Lock()


def ensure_torch() -> ModuleType:
    """Import torch on first use (~1 s, ~285 MB) with one thread per node process."""
    with _torch_lock:
        if "torch" not in sys.modules:
            import torch

            # Nodes share few cores; more threads per rank make small models slower.
            torch.set_num_threads(1)
        return sys.modules["torch"]


class ConnectPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    master_addr: str = Field(min_length=1, max_length=255)
    master_port: int = Field(ge=1, le=65535)
    world_size: int = Field(ge=1, le=256)
    rank: int = Field(ge=0)
    timeout_s: float = Field(default=30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _rank_in_world(self) -> ConnectPayload:
        if self.rank >= self.world_size:
            raise ValueError(f"rank {self.rank} is outside world_size {self.world_size}")
        return self


def connect(payload: ConnectPayload) -> dict[str, Any]:
    """Join a gloo process group, all_reduce a ones tensor, leave. Blocking: run in a thread."""
    torch = ensure_torch()
    import torch.distributed as dist

    started = time.perf_counter()
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{payload.master_addr}:{payload.master_port}",
        rank=payload.rank,
        world_size=payload.world_size,
        timeout=timedelta(seconds=payload.timeout_s),
    )
    try:
        tensor = torch.ones(1)
        dist.all_reduce(tensor)
        total = int(tensor.item())
    finally:
        # Without this gloo may abort the process at exit.
        dist.destroy_process_group()
    return {
        "ok": total == payload.world_size,
        "sum": total,
        "world_size": payload.world_size,
        "rank": payload.rank,
        "seconds": round(time.perf_counter() - started, 4),
    }


def destroy_process_group_if_any() -> None:
    """On shutdown, leave a process group a task left behind (only if torch was ever loaded)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
