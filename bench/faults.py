"""Faults during training, measured through the public API on a stack of real processes: the
digits workflow (`examples/digits.yaml`, `ddp` on 2 workers, batch 16 per worker so an epoch
has ~40 steps), undisturbed and with a worker killed.

- Detection: from `kill -9` (a process that exits) and from SIGSTOP (a hung one, found by
  its silence) of worker 1 at epoch 3 to `nexus.node.lost` (goals < 1 s and < 1.5 s;
  torchrun's default heartbeat timeout is ~15 s, then it restarts the whole job).
- Kill -> first epoch completed after it: an upper bound on the time to the next completed
  training step (goal < 2 s); and the epochs done again.
- Test accuracy of the disturbed runs against the undisturbed one (goal: within a point).
- Chaos: a training job of about `--chaos-seconds` (default 120) that loses a random worker
  of the job every 10 s; the training throughput (epochs/s, samples/s) it keeps, against the
  undisturbed run's, measured in the same run (goal >= 80%).

    .venv/bin/python -m bench.faults [--chaos-seconds 120] [--kill-every 10]

Uses NEXUS_DATABASE_URL / NEXUS_NATS_URL when set, else the stack's own embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import nats
import yaml

from cli.stack import StackInfo, start_stack, stop_stack
from shared.ml.data import load_splits
from shared.processes import free_port
from shared.settings import SERVICE_PORTS

ROOT = Path(__file__).resolve().parents[1]


def digits_spec(name: str, **training: Any) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load((ROOT / "examples" / "digits.yaml").read_text())
    spec["name"] = name
    spec["training"] |= {"batch_size": 16, **training}
    return spec


class Platform:
    """A stack, a user on it, and what its bus says about nodes and epochs."""

    def __init__(self, info: StackInfo, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        self.info = info
        self.cluster = httpx.AsyncClient(base_url=info.url("cluster"), headers=headers, timeout=30)
        self.trainer = httpx.AsyncClient(base_url=info.url("trainer"), headers=headers, timeout=30)
        # workflow id -> [(event, arrival wall time)]
        self.lost: dict[str, list[dict[str, Any]]] = {}
        self.progress: dict[str, list[dict[str, Any]]] = {}

    async def listen(self) -> None:
        self._nc = await nats.connect(self.info.nats_url)

        async def record(msg: Any) -> None:
            event = json.loads(msg.data)
            book = self.lost if msg.subject == "nexus.node.lost" else self.progress
            book.setdefault(event.get("workflow_id"), []).append(event)

        await self._nc.subscribe("nexus.node.lost", cb=record)
        await self._nc.subscribe("nexus.training.progress", cb=record)

    async def close(self) -> None:
        await self._nc.close()
        await self.cluster.aclose()
        await self.trainer.aclose()

    async def submit(self, spec: dict[str, Any]) -> str:
        posted = await self.cluster.post("/workflows", json=spec)
        posted.raise_for_status()
        workflow_id: str = posted.json()["id"]
        return workflow_id

    async def workflow(self, workflow_id: str) -> dict[str, Any]:
        response = await self.cluster.get(f"/workflows/{workflow_id}")
        response.raise_for_status()
        workflow: dict[str, Any] = response.json()
        return workflow

    async def job(self, workflow_id: str) -> dict[str, Any]:
        jobs = (await self.trainer.get("/jobs", params={"workflow_id": workflow_id})).json()
        (job,) = jobs["jobs"]
        return dict(job)

    async def wait_epoch(self, workflow_id: str, epoch: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = [e["epoch"] for e in self.progress.get(workflow_id, [])]
            if done and max(done) >= epoch:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"workflow {workflow_id} did not reach epoch {epoch}")

    async def wait_training_done(self, workflow_id: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workflow = await self.workflow(workflow_id)
            if workflow["current_phase"] > 3 or workflow["status"] in ("completed", "failed"):
                return workflow
            await asyncio.sleep(0.5)
        raise TimeoutError(f"workflow {workflow_id} still trains after {timeout} s")

    async def wait_done(self, workflow_id: str, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            workflow = await self.workflow(workflow_id)
            if workflow["status"] in ("completed", "failed"):
                return workflow
            await asyncio.sleep(0.5)
        raise TimeoutError(f"workflow {workflow_id} did not finish in {timeout} s")

    async def job_workers(self, workflow_id: str) -> list[dict[str, Any]]:
        """The pids of the job's current workers, from the cluster's record of its nodes."""
        job = await self.job(workflow_id)
        members = {m["node_id"] for m in job["config"]["members"] if m["role"] == "worker"}
        workflow = await self.workflow(workflow_id)
        cluster_id = workflow["phases"][0]["detail"]["cluster_id"]
        nodes = (await self.cluster.get(f"/clusters/{cluster_id}")).json()["nodes"]
        return [n for n in nodes if n["id"] in members and n["status"] == "registered"]


def _check(workflow: dict[str, Any]) -> None:
    if workflow["status"] != "completed":
        raise SystemExit(f"workflow {workflow['id']} {workflow['status']}: {workflow['error']}")


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["occurred_at"]).timestamp()


def _training_rate(job: dict[str, Any]) -> float:
    """Epochs per second of the job's training, start to finish."""
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return float(job["metrics"]["epochs_run"]) / (finished - started).total_seconds()


async def undisturbed(platform: Platform, epochs: int) -> dict[str, Any]:
    spec = digits_spec("bench-undisturbed", epochs=epochs)
    workflow_id = await platform.submit(spec)
    workflow = await platform.wait_done(workflow_id)
    job = await platform.job(workflow_id)
    times = sorted(_at(e) for e in platform.progress.get(workflow_id, []))
    epoch_s = statistics.median(b - a for a, b in zip(times, times[1:], strict=False))
    _check(workflow)
    return {
        "status": workflow["status"],
        "accuracy": workflow["result"]["test_accuracy"],
        "rate": _training_rate(job),
        "epoch_s": epoch_s,
    }


async def one_fault(platform: Platform, sig: signal.Signals, epochs: int) -> dict[str, Any]:
    spec = digits_spec(f"bench-{sig.name.lower()}", epochs=epochs)
    workflow_id = await platform.submit(spec)
    await platform.wait_epoch(workflow_id, 3)
    victim = next(n for n in await platform.job_workers(workflow_id) if n["rank"] == 1)
    killed_at = time.time()
    os.kill(victim["pid"], sig)
    workflow = await platform.wait_done(workflow_id)
    job = await platform.job(workflow_id)
    (lost,) = [e for e in platform.lost.get(workflow_id, []) if e["node_id"] == victim["id"]]
    after = [e for e in platform.progress[workflow_id] if e["attempt"] >= 1]
    recovery = job["recoveries"][0]
    _check(workflow)
    return {
        "status": workflow["status"],
        "accuracy": workflow["result"]["test_accuracy"],
        "detection_s": _at(lost) - killed_at,
        "next_epoch_s": min(_at(e) for e in after) - killed_at,
        "epochs_redone": recovery.get("epochs_redone"),
        "grown_back": bool(recovery.get("grown_back_with")),
    }


async def long_job(platform: Platform, epochs: int, kill_every: float | None) -> dict[str, Any]:
    """A job of `epochs` epochs (no early stop), undisturbed or losing a random worker of the
    job every `kill_every` seconds; its training throughput and what the kills cost."""
    name = "bench-chaos" if kill_every else "bench-long"
    spec = digits_spec(name, epochs=epochs, patience=1000, max_restarts=20, deadline_s=epochs * 5)
    workflow_id = await platform.submit(spec)
    await platform.wait_epoch(workflow_id, 1)
    kills = 0
    rng = random.Random(7)
    while True:
        try:
            await asyncio.wait_for(platform.wait_training_done(workflow_id, 3600), kill_every)
            break
        except TimeoutError:
            pass
        workers = await platform.job_workers(workflow_id)
        if workers:
            os.kill(rng.choice(workers)["pid"], signal.SIGKILL)
            kills += 1
    job = await platform.job(workflow_id)
    if not job["finished_at"] or not job["metrics"]:
        workflow = await platform.workflow(workflow_id)
        raise SystemExit(f"the {name} job did not finish training: {workflow['error']}")
    return {
        "kills": kills,
        "recoveries": len(job["recoveries"]),
        "epochs_run": job["metrics"]["epochs_run"],
        "rate": _training_rate(job),
        "epochs_redone": sum(r.get("epochs_redone") or 0 for r in job["recoveries"]),
        "val_accuracy": job["metrics"].get("val_accuracy"),
    }


@asynccontextmanager
async def platform_on_stack() -> AsyncIterator[Platform]:
    base = Path(tempfile.mkdtemp(prefix="nexus-bench-faults-"))
    overrides = {f"NEXUS_{name.upper()}_PORT": str(free_port()) for name in SERVICE_PORTS}
    overrides |= {
        "NEXUS_CONSUMER_PREFIX": f"bench-{secrets.token_hex(4)}-",
        "NEXUS_RESTORE_ON_STARTUP": "false",
        # The chaos run loses a dozen workers; each gets a replacement.
        "NEXUS_NODE_REPLACEMENTS": "100",
    }
    info = start_stack(base / "home", overrides, timeout=180)
    try:
        email, password = f"bench-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
        async with httpx.AsyncClient(base_url=info.url("auth")) as auth:
            credentials = {"email": email, "password": password}
            (await auth.post("/auth/register", json=credentials)).raise_for_status()
            token = await auth.post("/auth/token", data={"username": email, "password": password})
            token.raise_for_status()
        platform = Platform(info, token.json()["access_token"])
        await platform.listen()
        try:
            yield platform
        finally:
            await platform.close()
    finally:
        stop_stack(base / "home")
        shutil.rmtree(base, ignore_errors=True)


async def run(chaos_seconds: float, kill_every: float) -> None:
    rows = len(load_splits("digits", seed=42).x_train)
    async with platform_on_stack() as platform:
        base = await undisturbed(platform, epochs=30)
        signals = (signal.SIGKILL, signal.SIGSTOP)
        faults = {sig: await one_fault(platform, sig, 30) for sig in signals}
        chaos_epochs = max(10, round(chaos_seconds / base["epoch_s"]))
        calm = await long_job(platform, chaos_epochs, None)
        storm = await long_job(platform, chaos_epochs, kill_every)

    print("digits MLP, ddp on 2 workers, batch 16 per worker, 30 epochs; worker 1 at epoch 3")
    print(
        f"undisturbed: test accuracy {base['accuracy']:.4f}, an epoch every {base['epoch_s']:.3f} s"
    )
    goals = {signal.SIGKILL: 1.0, signal.SIGSTOP: 1.5}
    for sig, fault in faults.items():
        print(
            f"{sig.name:<8} detected in {fault['detection_s']:.3f} s (goal < {goals[sig]} s; "
            f"torchrun ~15 s), first epoch after the kill {fault['next_epoch_s']:.3f} s "
            f"(goal < 2 s), epochs redone {fault['epochs_redone']}, test accuracy "
            f"{fault['accuracy']:.4f} ({(fault['accuracy'] - base['accuracy']) * 100:+.1f} "
            "points against undisturbed)"
            + (", grew back to 2 workers" if fault["grown_back"] else "")
        )
    kept = storm["rate"] / calm["rate"]
    print(
        f"chaos: {chaos_epochs} epochs without early stop (~{chaos_seconds:.0f} s), a worker of "
        f"the job killed every {kill_every:.0f} s"
    )
    for label, job in (("undisturbed", calm), ("chaos", storm)):
        print(
            f"  {label:<12}{job['rate']:>7.2f} epochs/s {job['rate'] * rows:>7.0f} samples/s, "
            f"{job['epochs_run']} epochs, {job['kills']} kills, {job['recoveries']} recoveries, "
            f"{job['epochs_redone']} epochs redone, validation accuracy {job['val_accuracy']:.4f}"
        )
    print(f"  throughput kept: {kept:.2f}x the undisturbed run's (goal >= 0.80)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chaos-seconds", type=float, default=120.0)
    parser.add_argument("--kill-every", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(run(args.chaos_seconds, args.kill_every))


if __name__ == "__main__":
    main()
