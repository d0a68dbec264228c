"""Request to served model through the public API: `examples/digits.yaml` (ddp on 2 workers,
4 nodes) on a warm local stack, against a torchrun DDP run of the same training measured in
the same run.

    .venv/bin/python -m bench.workflow_latency [--runs 5]

Starts a stack under a temporary NEXUS_HOME (on NEXUS_NATS_URL / NEXUS_DATABASE_URL when set,
else embedded ones), registers a user, runs one workflow to warm it, then `--runs` more, each
timed from `POST /workflows` to the workflow completed with its model served. Prints medians:
the whole, each phase's duration and share (the phases' own `duration_s`), the training loop
inside phase 3 (its epochs' measured seconds), and the platform's overhead — request to
served minus that loop; and the wall time of `torchrun` training the same model, with the
ratio.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.training_phase import torchrun_once
from cli.stack import start_stack, stop_stack
from shared.processes import free_port
from shared.settings import SERVICE_PORTS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PHASES = ("setup", "configure", "train", "validate", "deploy")


def register(auth_url: str) -> str:
    email, password = f"bench-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
    httpx.post(f"{auth_url}/auth/register", json={"email": email, "password": password})
    token = httpx.post(f"{auth_url}/auth/token", data={"username": email, "password": password})
    token.raise_for_status()
    return str(token.json()["access_token"])


def run_once(cluster: httpx.Client, trainer: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    posted = cluster.post("/workflows", json=spec)
    posted.raise_for_status()
    workflow_id = posted.json()["id"]
    while True:
        workflow = cluster.get(f"/workflows/{workflow_id}").json()
        if workflow["status"] in ("completed", "failed"):
            break
        time.sleep(0.02)
    total = time.perf_counter() - started
    if workflow["status"] != "completed":
        raise RuntimeError(f"workflow failed: {workflow['error']}")
    (job,) = trainer.get("/jobs", params={"workflow_id": workflow_id}).json()["jobs"]
    epochs = trainer.get(f"/jobs/{job['id']}/metrics").json()["epochs"]
    loop = sum(float(e["metrics"].get("seconds") or 0.0) for e in epochs)
    phases = {p["name"]: p["duration_s"] or 0.0 for p in workflow["phases"]}
    return {"total": total, "loop": loop, **phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    spec = yaml.safe_load((PROJECT_ROOT / "examples" / "digits.yaml").read_text())
    overrides = {f"NEXUS_{name.upper()}_PORT": str(free_port()) for name in SERVICE_PORTS}
    overrides["NEXUS_CONSUMER_PREFIX"] = f"bench-{secrets.token_hex(4)}-"
    overrides["NEXUS_RESTORE_ON_STARTUP"] = "false"
    with tempfile.TemporaryDirectory() as home:
        stack = start_stack(Path(home), overrides, timeout=180)
        try:
            token = register(stack.url("auth"))
            headers = {"Authorization": f"Bearer {token}"}
            with (
                httpx.Client(base_url=stack.url("cluster"), headers=headers, timeout=60) as cluster,
                httpx.Client(base_url=stack.url("trainer"), headers=headers, timeout=60) as trainer,
            ):
                run_once(cluster, trainer, spec | {"name": "warm-up"})
                runs = []
                for run in range(args.runs):
                    runs.append(run_once(cluster, trainer, spec | {"name": f"bench-{run}"}))
                    print(f"run {run + 1}: {runs[-1]['total']:.2f} s", flush=True)
        finally:
            stop_stack(Path(home))
    epochs = spec["training"]["epochs"]
    torchrun = [torchrun_once(epochs, 2)["wall_seconds"] for _ in range(3)]
    median = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    total, loop = median["total"], median["loop"]
    print(f"\nmedians of {args.runs} runs of examples/digits.yaml (ddp, 2 workers, 4 nodes)")
    print(f"request -> served        {total:6.2f} s")
    for phase in PHASES:
        print(f"  {phase:<22}{median[phase]:6.2f} s  {median[phase] / total:5.0%}")
    print(f"training loop (phase 3) {loop:6.2f} s")
    print(f"platform overhead       {total - loop:6.2f} s  (request -> served minus the loop)")
    wall = statistics.median(torchrun)
    print(f"torchrun DDP, training  {wall:6.2f} s  -> request -> served at {total / wall:.2f}x")


if __name__ == "__main__":
    main()
