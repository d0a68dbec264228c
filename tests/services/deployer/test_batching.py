"""Dynamic batching: the rows of concurrent predict requests share one forward pass, each
request gets its own share of the outputs back, and a lone caller runs at once."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from services.deployer.model_server.batching import BatchingConfig, BatchMetrics, DynamicBatcher
from services.deployer.service.smoke import held_out_rows
from tests.services.deployer.conftest import SEED
from tests.services.deployer.test_model_server import serve


class Network:
    """A forward pass that records the batches it is given: row i's output is 10 * i."""

    def __init__(self) -> None:
        self.passes: list[int] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.passes.append(len(x))
        return x * 10


def batcher(network: Network, in_flight: int, size: int = 64) -> DynamicBatcher:
    metrics = BatchMetrics(CollectorRegistry(), "m")
    return DynamicBatcher(network, BatchingConfig(size, 0.001), metrics, lambda: in_flight)


def rows(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1)


async def test_concurrent_requests_share_one_pass_and_get_their_own_rows() -> None:
    network = Network()
    shared = batcher(network, in_flight=3)
    answers = await asyncio.gather(
        shared.run(rows(1)), shared.run(rows(2, 3)), shared.run(rows(4, 5, 6))
    )
    assert network.passes == [6]
    assert [a.ravel().tolist() for a in answers] == [[10], [20, 30], [40, 50, 60]]


async def test_a_lone_caller_runs_at_once_without_waiting() -> None:
    network = Network()
    alone = batcher(network, in_flight=1)
    answer = alone.run(rows(7))
    assert network.passes == [], "nothing may run before it is awaited"
    assert (await answer).ravel().tolist() == [70]
    assert network.passes == [1]


async def test_a_full_batch_goes_at_once_and_the_rest_follow() -> None:
    network = Network()
    small = batcher(network, in_flight=5, size=4)
    answers = await asyncio.gather(*(small.run(rows(i, i)) for i in range(5)))
    assert network.passes == [4, 4, 2]
    assert [a.ravel().tolist() for a in answers] == [[10 * i, 10 * i] for i in range(5)]


async def test_a_failed_pass_fails_every_request_in_it() -> None:
    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("out of memory")

    metrics = BatchMetrics(CollectorRegistry(), "m")
    failing = DynamicBatcher(broken, BatchingConfig(8, 0.001), metrics, lambda: 2)
    results = await asyncio.gather(
        failing.run(rows(1)), failing.run(rows(2)), return_exceptions=True
    )
    assert [str(r) for r in results] == ["out of memory", "out of memory"]


@pytest.mark.parametrize("size", [0, 1001])
def test_the_servers_batch_size_is_checked(size: int) -> None:
    from services.deployer.model_server.server import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--model-dir", "m", "--port", "8100", "--max-batch-size", str(size)])


@pytest.fixture(scope="module")
def batched_server(
    digits_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    yield from serve(digits_model_dir, tmp_path_factory, "--max-batch-size", "32")


async def test_a_batching_server_answers_each_concurrent_caller_as_alone(
    batched_server: str,
) -> None:
    held_out = held_out_rows("digits", SEED, 60).rows
    async with httpx.AsyncClient(base_url=batched_server, timeout=30) as client:
        whole = (await client.post("/predict", json={"rows": held_out})).json()
        info = (await client.get("/")).json()
        answers = await asyncio.gather(
            *(client.post("/predict", json={"rows": [row]}) for row in held_out)
        )
        metrics = (await client.get("/metrics")).text
    assert info["batching"] == {"max_batch_size": 32, "max_wait_us": 500}
    assert [a.json()["predictions"][0] for a in answers] == whole["predictions"]
    for answer, expected in zip(answers, whole["probabilities"], strict=True):
        np.testing.assert_allclose(answer.json()["probabilities"][0], expected, atol=1e-6)
    # Some pass served several of the concurrent callers at once.
    single = re.search(
        r'nexus_model_batch_requests_bucket\{le="1.0",model_id="test-model"\} (\S+)', metrics
    )
    total = re.search(r'nexus_model_batch_requests_count\{model_id="test-model"\} (\S+)', metrics)
    assert single is not None and total is not None, metrics
    assert float(single.group(1)) < float(total.group(1))
    assert "nexus_model_batch_wait_seconds_bucket" in metrics
