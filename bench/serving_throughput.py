"""A served model under load, against plain FastAPI + torch and the HTTP stack's ceiling:
`wrk` (one thread) at concurrency 1, 8 and 64, single-row `POST /predict` of digits' 64
features, the same MLP in every server.

    .venv/bin/python -m bench.serving_throughput [--seconds 10] [--concurrency 1 8 64]

Servers, each its own uvicorn process (uvloop, httptools, no access log, one torch thread),
measured one at a time on this machine:
- `ceiling`: FastAPI answering a constant (bench/baseline_servers.py);
- `plain`: the simplest FastAPI + torch endpoint for the same saved model (same file);
- `served`: the real model server as the deployer starts it, with its input validation,
  Prometheus metrics, tracing and access control on: every request carries a bearer JWT
  of the model's tenant, signed by a key whose JWKS a local HTTP server publishes (as the
  auth service does);
- `public`: the same served model with access control off (`--public`), to show its cost;
- `batched`: `served` with dynamic batching on (up to 64 rows a pass, 300 µs wait).
Prints requests/s, p50 and p99 per server and concurrency, and each against `plain`. The
percentiles are wrk's own: raw, not corrected for coordinated omission. Needs `wrk`
(Debian's package).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.serving_latency import train_and_save
from shared.processes import free_port

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
TENANT = "bench"
# The served model again, with dynamic batching on.
BATCHING = ["--max-batch-size", "64", "--max-batch-wait-us", "300"]


@dataclass(frozen=True)
class Point:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def parse_wrk(output: str) -> Point:
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))  # type: ignore[union-attr]
    failed = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    count = int(failed.group(1)) if failed else 0
    count += sum(int(n) for n in errors.groups()) if errors else 0
    return Point(rate, p50, p99, count)


def wrk(url: str, script: Path, connections: int, seconds: int) -> Point:
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_wrk(result.stdout)


def bench_token(scratch: Path) -> str:
    """An access token of tenant `bench`, and the JWKS that verifies it, written where
    `python -m http.server` publishes it as the auth service would."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.auth.keys import SigningKey
    from services.auth.tokens import TokenIssuer

    key = SigningKey.from_private_key(Ed25519PrivateKey.generate())
    jwks = scratch / "auth" / ".well-known" / "jwks.json"
    jwks.parent.mkdir(parents=True)
    jwks.write_text(json.dumps(key.jwks()))
    issuer = TokenIssuer(key, timedelta(hours=1), timedelta(hours=1))
    return issuer.issue_pair(uuid.uuid4(), TENANT).access_token


def predict_script(path: Path, body: str, token: str | None) -> Path:
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    if token:
        lines.append(f'wrk.headers["Authorization"] = "Bearer {token}"')
    path.write_text("\n".join(lines) + "\n")
    return path


@contextmanager
def server(argv: list[str], port: int) -> Iterator[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{argv} exited: {process.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = Path(scratch) / "model"
        row = train_and_save(model_dir)[0]
        body = json.dumps({"rows": [row]})
        token = bench_token(Path(scratch))
        anonymous = predict_script(Path(scratch) / "predict.lua", body, None)
        signed_in = predict_script(Path(scratch) / "predict-auth.lua", body, token)
        auth_port = free_port()
        py = sys.executable
        jwks_server = [py, "-m", "http.server", "--directory", str(Path(scratch) / "auth")]
        model = [py, "-m", "services.deployer.model_server", "--model-dir", str(model_dir)]
        served = [*model, "--tenant", TENANT, "--auth-url", f"http://127.0.0.1:{auth_port}"]
        servers = {
            "ceiling": [py, "-m", "bench.baseline_servers", "ceiling"],
            "plain": [py, "-m", "bench.baseline_servers", "plain", "--model-dir", str(model_dir)],
            "served": served,
            "public": [*model, "--public"],
            "batched": [*served, *BATCHING],
        }
        points: dict[str, dict[int, Point]] = {}
        auth = subprocess.Popen([*jwks_server, str(auth_port)], stderr=subprocess.DEVNULL)
        try:
            for name, argv in servers.items():
                script = signed_in if "--tenant" in argv else anonymous
                points[name] = measure(name, argv, script, row, token, args)
        finally:
            auth.terminate()
            auth.wait(timeout=10)
    print(f"\nwrk -t1, {args.seconds} s per point; percentiles raw (not corrected)")
    print(f"{'server':<8} {'c':>3} {'req/s':>9} {'x plain':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for name, by_concurrency in points.items():
        for connections, p in by_concurrency.items():
            ratio = p.requests_per_s / points["plain"][connections].requests_per_s
            print(
                f"{name:<8} {connections:>3} {p.requests_per_s:>9,.0f} {ratio:>7.2f}x "
                f"{p.p50_ms:>8.3f} {p.p99_ms:>8.3f}"
            )


def measure(
    name: str, argv: list[str], script: Path, row: list[float], token: str, args: Any
) -> dict[int, Point]:
    port = free_port()
    points: dict[int, Point] = {}
    with server([*argv, "--port", str(port)], port) as url:
        headers = {"Authorization": f"Bearer {token}"}
        answer = httpx.post(f"{url}/predict", json={"rows": [row]}, headers=headers, timeout=10)
        answer.raise_for_status()
        if "--tenant" in argv:  # access control is on: no token, no answer
            assert httpx.post(f"{url}/predict", json={"rows": [row]}).status_code == 401
        wrk(f"{url}/predict", script, 8, 2)  # warm-up
        for connections in args.concurrency:
            p = points[connections] = wrk(f"{url}/predict", script, connections, args.seconds)
            print(
                f"{name:<8} c={connections:<3} {p.requests_per_s:9,.0f} req/s  "
                f"p50 {p.p50_ms:8.3f} ms  p99 {p.p99_ms:8.3f} ms  errors {p.errors}",
                flush=True,
            )
    return points


if __name__ == "__main__":
    main()
