"""Dynamic batching: the rows of predict requests that arrive together go through the
network in one forward pass, each request's share of the outputs going back to it.

The server is one event loop. A request hands its prepared rows to `DynamicBatcher.run`.
Alone (no other predict request in flight) its rows go through the network at once: a lone
caller pays nothing for batching. Otherwise the batch is flushed by a callback scheduled
behind every request the loop already has in hand, so requests read in the same turn of
the loop share a pass; while requests in flight have yet to join, a batch short of
`max_batch_size` waits for them up to `max_wait_s`. A batch of `max_batch_size` rows goes
at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from shared.ml.runtimes import Forward


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int  # rows in one forward pass; 1: no batching
    max_wait_s: float  # how long a batch under load waits for more rows

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1


@dataclass
class _Waiting:
    rows: np.ndarray
    future: asyncio.Future[np.ndarray]
    since: float = field(default_factory=time.perf_counter)


class BatchMetrics:
    def __init__(self, registry: CollectorRegistry, model_id: str) -> None:
        self.requests = Histogram(
            "nexus_model_batch_requests",
            "Predict requests served by one forward pass",
            ["model_id"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        ).labels(model_id)
        self.wait = Histogram(
            "nexus_model_batch_wait_seconds",
            "Time a request's rows waited for their batch's forward pass",
            ["model_id"],
            buckets=(0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025),
            registry=registry,
        ).labels(model_id)


class DynamicBatcher:
    def __init__(
        self,
        forward: Forward,
        config: BatchingConfig,
        metrics: BatchMetrics,
        in_flight: Callable[[], int],
    ) -> None:
        """`in_flight`: how many predict requests the server is handling now, this one too."""
        self.forward = forward
        self.config = config
        self.metrics = metrics
        self.in_flight = in_flight
        self._waiting: list[_Waiting] = []
        self._rows = 0
        self._flush_scheduled = False

    async def run(self, rows: np.ndarray) -> np.ndarray:
        """The network's outputs for `rows` (prepared input), from a shared forward pass."""
        if not self._waiting and self.in_flight() <= 1:
            self.metrics.requests.observe(1)
            self.metrics.wait.observe(0.0)
            return self.forward(rows)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(rows, loop.create_future())
        self._waiting.append(waiting)
        self._rows += len(rows)
        if self._rows >= self.config.max_batch_size:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush_when_due)
        return await waiting.future

    def _flush_when_due(self) -> None:
        if not self._waiting:
            self._flush_scheduled = False
            return
        waited = time.perf_counter() - self._waiting[0].since
        arriving = self.in_flight() - len(self._waiting)
        if arriving > 0 and waited < self.config.max_wait_s:
            # Requests in flight have yet to join: wait for them until the oldest's
            # deadline, looking again once the loop has handled what it has in hand.
            asyncio.get_running_loop().call_soon(self._flush_when_due)
            return
        self._flush()

    def _flush(self) -> None:
        batch, self._waiting, self._rows = self._waiting, [], 0
        self._flush_scheduled = False
        if not batch:
            return
        started = time.perf_counter()
        try:
            inputs = batch[0].rows if len(batch) == 1 else np.concatenate([w.rows for w in batch])
            outputs = self.forward(inputs)
        except Exception as exc:  # every request of the pass learns why it failed
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            return
        self.metrics.requests.observe(len(batch))
        offset = 0
        for waiting in batch:
            self.metrics.wait.observe(started - waiting.since)
            count = len(waiting.rows)
            if not waiting.future.done():  # its caller may have gone
                waiting.future.set_result(outputs[offset : offset + count])
            offset += count
