"""The parameter-server strategy's synchronous step, on torch.distributed collectives.

The server rank holds the parameters and the optimizer; every worker computes gradients on
its own shard, and each step: the gradients are summed onto the server (`reduce`), which
averages them over the workers, steps its optimizer, and sends the new weights back
(`broadcast`). Averaging one gradient from every worker is DDP's step, so a synchronous
parameter server trains the same weights as DDP for the same seed, data order and world size.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from shared.ml.training import TrainConfig


def push_gradients_pull_weights(model: nn.Module, server_rank: int) -> None:
    """A worker's step: its gradients to the server, the server's new weights back."""
    for parameter in model.parameters():
        assert parameter.grad is not None, "called after backward()"
        dist.reduce(parameter.grad, dst=server_rank, op=dist.ReduceOp.SUM)
    for parameter in model.parameters():
        dist.broadcast(parameter.data, src=server_rank)


def steps_per_epoch(train_rows: int, workers: int, batch_size: int) -> int:
    """Batches in each worker's shard (DistributedSampler pads the shards to equal length)."""
    return math.ceil(math.ceil(train_rows / workers) / batch_size)


def serve_parameters(
    model: nn.Module, config: TrainConfig, *, workers: int, steps: int, server_rank: int
) -> None:
    """The server's side of `steps` synchronous steps; `model` holds the parameters."""
    optimizer = config.build_optimizer(model.parameters())
    parameters = list(model.parameters())
    for _ in range(steps):
        for parameter in parameters:
            # The server adds nothing of its own to the sum.
            summed = torch.zeros_like(parameter)
            dist.reduce(summed, dst=server_rank, op=dist.ReduceOp.SUM)
            parameter.grad = summed.div_(workers)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for parameter in parameters:
            dist.broadcast(parameter.data, src=server_rank)


# --- asynchronous: stale-synchronous parallel ---------------------------------------------
# Messages are flat float32 tensors on point-to-point ops: a worker sends
# [clock, version it computed on, *gradients] and receives [version, *weights].
_HEADER = 2


def _flat_size(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class AsyncWorkerStep:
    """A worker's step under a bounded-staleness parameter server: push this step's
    gradients, then take whatever weights the server sends back (it answers once they are at
    most `max_staleness` versions behind this worker's next step)."""

    def __init__(self, model: nn.Module, server_rank: int) -> None:
        self._model = model
        self._server = server_rank
        self._clock = 0
        self._version = 0  # of the weights this worker holds
        self._reply = torch.empty(_HEADER + _flat_size(model))

    def __call__(self) -> None:
        grads = [p.grad.reshape(-1) for p in self._model.parameters() if p.grad is not None]
        header = torch.tensor([float(self._clock), float(self._version)])
        dist.send(torch.cat([header, *grads]), dst=self._server)
        dist.recv(self._reply, src=self._server)
        self._version = int(self._reply[0].item())
        torch.nn.utils.vector_to_parameters(self._reply[_HEADER:], self._model.parameters())
        self._clock += 1


def serve_parameters_async(
    model: nn.Module,
    config: TrainConfig,
    *,
    workers: list[int],
    steps: int,
    max_staleness: int,
) -> list[tuple[int, int, int]]:
    """The server of `steps` clocks of stale-synchronous training. The gradients of one
    clock are averaged into one optimizer step once every worker has sent its own (version
    c+1 is clock c's step); a worker that sent clock c gets weights back only once the
    server is at version c+1-max_staleness or later, so no worker runs more than
    `max_staleness` versions ahead of the slowest. With 0 this is the synchronous step.
    Returns the version log: (worker rank, clock, version its gradient was computed on)."""
    optimizer = config.build_optimizer(model.parameters())
    parameters = list(model.parameters())
    size = _flat_size(model)
    inbox = torch.empty(_HEADER + size)
    pending: dict[int, list[torch.Tensor]] = {}
    waiting: dict[int, int] = {}  # worker rank -> the version it needs before it goes on
    log: list[tuple[int, int, int]] = []
    last_clock: dict[int, int] = {}
    version = 0
    done = 0  # workers that have sent their last clock and been answered
    while done < len(workers):
        sender = dist.recv(inbox)
        clock, computed_on = int(inbox[0].item()), int(inbox[1].item())
        log.append((sender, clock, computed_on))
        last_clock[sender] = clock
        pending.setdefault(clock, []).append(inbox[_HEADER:].clone())
        waiting[sender] = clock + 1 - max_staleness
        # Apply every clock whose gradients are all in, in order.
        while len(pending.get(version, [])) == len(workers):
            averaged = torch.stack(pending.pop(version)).mean(dim=0)
            offset = 0
            for parameter in parameters:
                count = parameter.numel()
                parameter.grad = averaged[offset : offset + count].view_as(parameter).clone()
                offset += count
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            version += 1
        reply: torch.Tensor | None = None  # the current weights, built once for every answer
        for rank, needed in list(waiting.items()):
            # The last clock's answer waits for every step, so each worker ends on the
            # server's final weights.
            final = last_clock[rank] == steps - 1
            if version >= (steps if final else needed):
                if reply is None:
                    weights = torch.nn.utils.parameters_to_vector(parameters).detach()
                    reply = torch.cat([torch.tensor([float(version), 0.0]), weights])
                dist.send(reply, dst=rank)
                del waiting[rank]
                done += final
    return log
