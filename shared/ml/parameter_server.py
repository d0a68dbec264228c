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
