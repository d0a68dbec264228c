"""Upload and schema inference of a large CSV through the trainer's `POST /datasets`, against
a plain copy of the same file and a whole-file pyarrow read, in the same run.

    .venv/bin/python -m bench.dataset_upload [--mb 100] [--runs 3]

Writes a CSV of about `--mb` MB (100 float columns and a class label) to a temp folder,
starts the trainer service as its own process (on NEXUS_DATABASE_URL and NEXUS_NATS_URL;
defaults: the local Postgres `test` database and NATS), and uploads the file as multipart.
Prints, as medians: MB/s of the upload (received, stored, checksummed, checked, schema
inferred), of parsing the whole file with pyarrow.csv.read_csv (parsing alone, all threads) and
of a plain file copy (the disk's pace); and the service's peak memory growth during the upload
against the peak memory of that whole-file read.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pcsv

from shared.migrate import upgrade
from shared.processes import free_port
from shared.security import internal_headers

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FEATURES = 100
_MB = 1024 * 1024


def write_csv(path: Path, megabytes: int) -> None:
    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(FEATURES)]
    with pcsv.CSVWriter(
        path,
        pa.schema([*(pa.field(n, pa.float64()) for n in names), pa.field("label", pa.string())]),
    ) as writer:
        while path.stat().st_size < megabytes * _MB:
            rows = 20_000
            columns = {n: np.round(rng.normal(size=rows), 5) for n in names}
            labels = pa.array([f"class-{k}" for k in rng.integers(0, 5, size=rows)])
            writer.write_table(pa.table({**columns, "label": labels}))


def start_trainer(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process_env = os.environ | env | {"NEXUS_HOME": str(home), "NEXUS_TRAINER_PORT": str(port)}
    process_env["PYTHONPATH"] = str(PROJECT_ROOT)
    log = (home / "trainer.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.trainer"], env=process_env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the trainer did not start; see {home / 'trainer.log'}")


class PeakMemory:
    """Samples a process's resident memory every 20 ms; `growth` is the peak above the start."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def upload(url: str, headers: dict[str, str], path: Path) -> tuple[float, dict[str, object]]:
    start = time.perf_counter()
    with path.open("rb") as f:
        response = httpx.post(
            f"{url}/datasets", files={"file": (path.name, f)}, headers=headers, timeout=600
        )
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, response.json()


def whole_file_read(path: Path) -> tuple[float, int]:
    """Seconds and peak RSS growth of a fresh process that parses the whole CSV at once with
    pyarrow's multithreaded reader: no upload, no checks, and the file's size in memory."""
    code = (
        "import resource, sys, time, pyarrow.csv as c; "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "start = time.perf_counter(); table = c.read_csv(sys.argv[1]); "
        "print(time.perf_counter() - start, "
        "(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    seconds, peak = out.stdout.split()
    return float(seconds), int(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    database_url = os.environ.get("NEXUS_DATABASE_URL", "postgresql://postgres@127.0.0.1/test")
    nats_url = os.environ.get("NEXUS_NATS_URL", "nats://127.0.0.1:4222")
    upgrade(database_url)
    token = secrets.token_urlsafe(32)
    env = {
        "NEXUS_DATABASE_URL": database_url,
        "NEXUS_NATS_URL": nats_url,
        "NEXUS_INTERNAL_TOKEN": token,
        "NEXUS_CONSUMER_PREFIX": f"bench-{secrets.token_hex(4)}-",
        "NEXUS_TENANT_DATASET_QUOTA_BYTES": str(100 * 1024**3),
    }
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        source = home / "large.csv"
        write_csv(source, args.mb)
        size_mb = source.stat().st_size / _MB
        trainer, url = start_trainer(home, env)
        headers = internal_headers(token, f"bench-{secrets.token_hex(4)}")
        uploads, growths, copies, parses, peaks = [], [], [], [], []
        try:
            for run in range(args.runs):
                with PeakMemory(trainer.pid) as memory:
                    elapsed, dataset = upload(url, headers, source)
                uploads.append(size_mb / elapsed)
                growths.append(memory.growth / _MB)
                httpx.delete(f"{url}/datasets/{dataset['id']}", headers=headers, timeout=60)
                start = time.perf_counter()
                shutil.copyfile(source, home / f"copy-{run}.csv")
                os.sync()
                copies.append(size_mb / (time.perf_counter() - start))
                (home / f"copy-{run}.csv").unlink()
                seconds, peak = whole_file_read(source)
                parses.append(size_mb / seconds)
                peaks.append(peak / _MB)
        finally:
            trainer.terminate()
            trainer.wait(10)
    schema = dataset["schema"]
    assert isinstance(schema, dict)
    upload_rate, copy_rate = statistics.median(uploads), statistics.median(copies)
    growth, whole = statistics.median(growths), statistics.median(peaks)
    parse_rate = statistics.median(parses)
    print(f"CSV: {size_mb:.1f} MB, {schema['rows']} rows x {len(schema['features'])} features")
    print(
        f"upload + checks + schema:  {upload_rate:7.1f} MB/s  (runs: "
        f"{', '.join(f'{r:.1f}' for r in uploads)})"
    )
    for label, rate in (("pyarrow read_csv, whole:", parse_rate), ("plain file copy:", copy_rate)):
        print(f"{label:<26} {rate:7.1f} MB/s  -> upload at {upload_rate / rate:.2f}x of it")
    print(
        f"trainer peak memory growth during upload: {growth:6.1f} MB "
        f"({growth / size_mb:.2f}x the file)"
    )
    print(
        f"whole-file pyarrow read peak memory:      {whole:6.1f} MB "
        f"({whole / size_mb:.2f}x the file) -> streamed uses {growth / whole:.2f}x of it"
    )


if __name__ == "__main__":
    main()
