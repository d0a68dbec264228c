"""`nexus up` as a user runs it: the six services forked from one server that imported their
modules once (the default) against six new interpreters (`NEXUS_SERVICE_START=exec`), in
the same run, alternating.

    .venv/bin/python -m bench.stack_start [--runs 5]

Each mode gets a new NEXUS_HOME: its first `nexus up` is a first start (Postgres initialises
its data folder, the secrets are generated); then `--runs` more on the same home, each after
`nexus down` (a warm machine). Uses the embedded NATS and Postgres unless NEXUS_NATS_URL /
NEXUS_DATABASE_URL are set, and free ports, so a running stack is left alone. Prints the
first start and the median warm start of each mode, and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shared.processes import free_port
from shared.settings import SERVICE_PORTS

MODES = ("fork", "exec")


def nexus(command: str, env: dict[str, str]) -> float:
    """Run `nexus COMMAND` as a new process, as a user would; its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "cli", command], env=env, check=True, stdout=subprocess.DEVNULL
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ports = {f"NEXUS_{name.upper()}_PORT": str(free_port()) for name in SERVICE_PORTS}
    with tempfile.TemporaryDirectory() as scratch:
        envs = {
            mode: {
                **os.environ,
                **ports,
                "NEXUS_HOME": str(Path(scratch) / mode),
                "NEXUS_SERVICE_START": mode,
            }
            for mode in MODES
        }
        first: dict[str, float] = {}
        warm: dict[str, list[float]] = {mode: [] for mode in MODES}
        try:
            for mode in MODES:
                first[mode] = nexus("up", envs[mode])
                nexus("down", envs[mode])
                print(f"{mode}: first start {first[mode]:.2f} s", flush=True)
            for run in range(args.runs):
                for mode in MODES:
                    warm[mode].append(nexus("up", envs[mode]))
                    nexus("down", envs[mode])
                    print(f"{mode}: warm start {run + 1}: {warm[mode][-1]:.2f} s", flush=True)
        finally:
            for env in envs.values():
                subprocess.run([sys.executable, "-m", "cli", "down"], env=env, check=False)
    median = {mode: statistics.median(times) for mode, times in warm.items()}
    print(f"\n`nexus up` to every service ready, median of {args.runs} warm starts")
    print(
        f"forked from one warm server  first {first['fork']:5.2f} s  warm {median['fork']:5.2f} s"
    )
    print(
        f"six new interpreters         first {first['exec']:5.2f} s  warm {median['exec']:5.2f} s"
    )
    print(
        f"ratio (fork / exec)          first {first['fork'] / first['exec']:5.2f}x  "
        f"warm {median['fork'] / median['exec']:5.2f}x"
    )


if __name__ == "__main__":
    main()
