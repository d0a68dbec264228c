"""The parameter-server strategy's steps, on torch.distributed collectives and point-to-point
ops (never `torch.distributed.rpc`).

Ranks 0..S-1 are the servers, the rest the workers. The parameters are sharded across the
servers (`shard_owners`): each server holds the optimizer of its own shard and is the only
one to step it; every worker holds a full copy of the weights to compute gradients on.

- **sync**: each step every worker's gradient of a parameter is summed onto its owner
  (`reduce`), which averages over the workers, steps, and sends the new weights back
  (`broadcast`). One averaged gradient from every worker is DDP's step, so a synchronous
  parameter server trains DDP's weights for the same seed, data order and world size.
- **async** (stale-synchronous parallel): a worker sends its gradient of each shard to the
  shard's server and goes on with whatever weights come back; a server answers once its
  weights are at most `max_staleness` versions behind the worker's next step, so no worker
  runs more than that ahead of the slowest. The last step of every epoch waits for all of
  the epoch's updates, so every worker ends an epoch on the same weights (which is what lets
  the job agree on validation and early stopping). With 0 it is the synchronous step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

Parameters = Sequence[nn.Parameter]


@dataclass(frozen=True)
class ServerState:
    """A parameter server's own state after an epoch: its shard's optimizer (the moments and
    step counts the workers' snapshots do not hold). A server that survives a worker's loss
    resumes with it, so the job's next attempt steps as if nothing had happened to it."""

    epoch: int
    rank: int
    servers: int  # the shard layout follows from the number of servers
    optimizer_state: dict[str, Any]


def steps_per_epoch(train_rows: int, workers: int, batch_size: int) -> int:
    """Batches in each worker's shard (DistributedSampler pads the shards to equal length)."""
    return math.ceil(math.ceil(train_rows / workers) / batch_size)


def shard_owners(parameters: Parameters, servers: Sequence[int]) -> list[int]:
    """The server rank that owns each parameter: largest first onto the least-loaded server,
    so the shards are close in size. Every server owns at least one parameter."""
    if len(parameters) < len(servers):
        raise ValueError(
            f"{len(servers)} parameter servers for {len(parameters)} parameter tensors; "
            "use at most one server per tensor"
        )
    owners = [0] * len(parameters)
    load = dict.fromkeys(servers, 0)
    by_size = sorted(range(len(parameters)), key=lambda i: (-parameters[i].numel(), i))
    for index in by_size:
        # Empty servers first, so none is left without a shard.
        server = min(servers, key=lambda s: (load[s] > 0, load[s], s))
        owners[index] = server
        load[server] += parameters[index].numel()
    return owners


def owned_by(parameters: Parameters, owners: list[int], rank: int) -> list[nn.Parameter]:
    return [p for p, owner in zip(parameters, owners, strict=True) if owner == rank]


# --- synchronous ---------------------------------------------------------------------------


class _Shards:
    """The parameters grouped by owning server, each group moved as one flat tensor: one
    collective per server per step instead of one per parameter tensor."""

    def __init__(self, parameters: Parameters, owners: list[int]) -> None:
        self.by_server = {s: owned_by(parameters, owners, s) for s in sorted(set(owners))}

    def flat_weights(self, server: int) -> torch.Tensor:
        return torch.nn.utils.parameters_to_vector(self.by_server[server]).detach()

    def set_weights(self, server: int, flat: torch.Tensor) -> None:
        torch.nn.utils.vector_to_parameters(flat, self.by_server[server])

    def size(self, server: int) -> int:
        return _flat_size(self.by_server[server])


class SyncPush:
    """A worker's synchronous step: its gradients to their owners, the new weights back."""

    def __init__(self, parameters: Parameters, owners: list[int]) -> None:
        self._shards = _Shards(parameters, owners)

    def __call__(self) -> None:
        for server, parameters in self._shards.by_server.items():
            assert all(p.grad is not None for p in parameters), "called after backward()"
            grads = torch.cat([p.grad.reshape(-1) for p in parameters if p.grad is not None])
            dist.reduce(grads, dst=server, op=dist.ReduceOp.SUM)
        for server in self._shards.by_server:
            weights = torch.empty(self._shards.size(server))
            dist.broadcast(weights, src=server)
            self._shards.set_weights(server, weights)


class SyncParameterServer:
    """A server's side of the synchronous steps. It takes part in every shard's collectives
    (adding nothing to another server's sums) and steps only its own shard."""

    def __init__(
        self,
        parameters: Parameters,
        owners: list[int],
        optimizer: torch.optim.Optimizer,
        *,
        rank: int,
        workers: int,
    ) -> None:
        self._shards = _Shards(parameters, owners)
        self._optimizer = optimizer
        self._rank = rank
        self._workers = workers

    def serve(self, steps: int) -> None:
        mine = self._shards.by_server[self._rank]
        for _ in range(steps):
            for server in self._shards.by_server:
                summed = torch.zeros(self._shards.size(server))
                dist.reduce(summed, dst=server, op=dist.ReduceOp.SUM)
                if server == self._rank:
                    summed.div_(self._workers)
                    offset = 0
                    for parameter in mine:
                        count = parameter.numel()
                        parameter.grad = summed[offset : offset + count].view_as(parameter)
                        offset += count
            self._optimizer.step()
            self._optimizer.zero_grad(set_to_none=True)
            for server in self._shards.by_server:
                if server == self._rank:
                    weights = self._shards.flat_weights(server)
                else:
                    weights = torch.empty(self._shards.size(server))
                dist.broadcast(weights, src=server)


# --- asynchronous: stale-synchronous parallel ---------------------------------------------
# Messages are flat float32 tensors: a worker sends [clock, version it computed on,
# *gradients of the shard] and receives [version, 0, *weights of the shard].
_HEADER = 2


def _flat_size(parameters: Parameters) -> int:
    return sum(p.numel() for p in parameters)


class AsyncWorkerStep:
    """A worker's step under bounded-staleness servers: push this step's gradient of every
    shard, then take whatever weights the servers send back. Sends and receives are posted
    together, so a server answering one worker never waits on another's order of calls."""

    def __init__(self, parameters: Parameters, owners: list[int]) -> None:
        servers = sorted(set(owners))
        self._shards = {s: owned_by(parameters, owners, s) for s in servers}
        self._clock = 0
        self._version = dict.fromkeys(servers, 0)  # of the weights held, per server
        self._replies = {s: torch.empty(_HEADER + _flat_size(p)) for s, p in self._shards.items()}

    def __call__(self) -> None:
        requests = []
        for server, parameters in self._shards.items():
            grads = [p.grad.reshape(-1) for p in parameters if p.grad is not None]
            header = torch.tensor([float(self._clock), float(self._version[server])])
            requests.append(dist.isend(torch.cat([header, *grads]), dst=server))
        for server, reply in self._replies.items():
            requests.append(dist.irecv(reply, src=server))
        for request in requests:
            if request is not None:  # None only for a rank outside the group: not here
                request.wait()
        for server, reply in self._replies.items():
            self._version[server] = int(reply[0].item())
            torch.nn.utils.vector_to_parameters(reply[_HEADER:], self._shards[server])
        self._clock += 1


class AsyncParameterServer:
    """A server of its shard under stale-synchronous parallel. The gradients of one clock
    are averaged into one optimizer step once every worker has sent its own (version c+1 is
    clock c's step). `log` records (worker rank, clock, version its gradient was computed
    on) for every gradient received: the staleness bound can be checked from it."""

    def __init__(
        self,
        parameters: Parameters,
        optimizer: torch.optim.Optimizer,
        *,
        workers: Sequence[int],
        max_staleness: int,
    ) -> None:
        self._parameters = list(parameters)
        self._optimizer = optimizer
        self._workers = list(workers)
        self._max_staleness = max_staleness
        self._inbox = torch.empty(_HEADER + _flat_size(self._parameters))
        self.version = 0
        self.log: list[tuple[int, int, int]] = []

    def serve(self, steps: int) -> None:
        """Serve the next `steps` clocks (one epoch); returns with every worker answered for
        the last of them, on the weights of all of them."""
        end = self.version + steps
        pending: dict[int, list[torch.Tensor]] = {}
        waiting: dict[int, int] = {}  # worker rank -> the version it needs before it goes on
        last_clock: dict[int, int] = {}
        done = 0  # workers that have sent this epoch's last clock and been answered
        while done < len(self._workers):
            sender = dist.recv(self._inbox)
            clock, computed_on = int(self._inbox[0].item()), int(self._inbox[1].item())
            self.log.append((sender, clock, computed_on))
            last_clock[sender] = clock
            pending.setdefault(clock, []).append(self._inbox[_HEADER:].clone())
            waiting[sender] = clock + 1 - self._max_staleness
            self._apply_complete_clocks(pending)
            reply: torch.Tensor | None = None  # the current weights, built once per round
            for rank, needed in list(waiting.items()):
                final = last_clock[rank] == end - 1
                if self.version >= (end if final else needed):
                    if reply is None:
                        weights = torch.nn.utils.parameters_to_vector(self._parameters)
                        header = torch.tensor([float(self.version), 0.0])
                        reply = torch.cat([header, weights.detach()])
                    dist.send(reply, dst=rank)
                    del waiting[rank]
                    done += final

    def _apply_complete_clocks(self, pending: dict[int, list[torch.Tensor]]) -> None:
        """Step once for every clock whose gradients are all in, in clock order."""
        while len(pending.get(self.version, [])) == len(self._workers):
            averaged = torch.stack(pending.pop(self.version)).mean(dim=0)
            offset = 0
            for parameter in self._parameters:
                count = parameter.numel()
                parameter.grad = averaged[offset : offset + count].view_as(parameter).clone()
                offset += count
            self._optimizer.step()
            self._optimizer.zero_grad(set_to_none=True)
            self.version += 1
