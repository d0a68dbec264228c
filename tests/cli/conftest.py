"""Fixtures for the CLI tests: a private NEXUS_HOME, throwaway processes, free ports."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from cli.stack.home import NexusHome, resolve_home


@pytest.fixture
def home(monkeypatch) -> Iterator[NexusHome]:
    """A fresh NEXUS_HOME per test, also exported so CLI commands resolve it.

    Not under pytest's tmp_path: every pytest session run as root resets
    /tmp/pytest-of-root to 0700 (and prunes old runs), which locks the embedded Postgres
    system user out of its own data directory mid-test whenever another session starts.
    """
    base = Path(tempfile.mkdtemp(prefix="nexus-cli-test-"))
    monkeypatch.setenv("NEXUS_HOME", str(base / "nexus"))
    yield resolve_home(base / "nexus").ensure()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def sleeper() -> Iterator[Callable[[], subprocess.Popen]]:
    """Start `python -c 'sleep'` processes that are killed when the test ends."""
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture
def free_ports() -> Callable[[int], list[int]]:
    """`n` distinct free ports chosen by the kernel, so concurrent test runs do not collide."""

    def pick(count: int) -> list[int]:
        sockets = [socket.socket() for _ in range(count)]
        try:
            for sock in sockets:
                sock.bind(("127.0.0.1", 0))
            return [sock.getsockname()[1] for sock in sockets]
        finally:
            for sock in sockets:
                sock.close()

    return pick


DATASET = {
    "id": "5f0c1d2e-0000-4000-8000-000000000001",
    "name": "plants",
    "format": "csv",
    "source": "upload",
    "location": "file:///store/t1/datasets/5f0c1d2e-0000-4000-8000-000000000001",
    "size_bytes": 2_500_000,
    "sha256": "ab" * 32,
    "created_at": "2026-12-03T07:00:00Z",
    "schema": {
        "format": "csv",
        "rows": 60,
        "features": ["width", "shade"],
        "target": "kind",
        "task": "classification",
        "class_names": ["k0", "k1"],
        "class_counts": [30, 30],
        "categories": {"shade": ["blue", "red"]},
        "input_shape": None,
        "statistics": [{"name": "width", "mean": 0.5, "std": 0.25, "min": 0.0, "max": 1.0}],
        "preview": [{"width": 0.25, "shade": "red", "kind": "k1"}],
    },
}
DATASET_SUMMARY = {
    "id": DATASET["id"],
    "name": "plants",
    "format": "csv",
    "task": "classification",
    "rows": 60,
    "features": 2,
    "classes": 2,
    "size_bytes": 2_500_000,
    "created_at": "2026-12-03T07:00:00Z",
}
BUILTIN = {"name": "iris", "task": "classification", "samples": 150, "features": 4, "classes": 3}


class EventStream(list):
    """A text/event-stream answer: each item a `workflow` event."""


class FakeApi:
    """A stand-in for the auth and cluster services (which are written elsewhere), served
    over real HTTP on a free port, so the client's wire format is what gets tested."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.valid_tokens = {"access-1"}
        self.workflow_states: list[dict] = []
        self.polls = 0

    def handle(self, method: str, path: str, headers: dict, body: bytes) -> tuple[int, object]:
        self.requests.append((method, path, headers, body))
        if path == "/auth/register":
            return 201, {"id": "u1", "email": json.loads(body)["email"], "tenant_id": "t1"}
        if path == "/auth/token":
            form = parse_qs(body.decode())
            if form.get("password") != ["right"]:
                return 401, {"error": "invalid_credentials", "detail": "wrong e-mail or password"}
            return 200, {
                "access_token": "access-1",
                "refresh_token": "refresh-1",
                "token_type": "bearer",
                "expires_in": 900,
            }
        if path == "/auth/refresh":
            self.valid_tokens = {"access-2"}
            return 200, {"access_token": "access-2", "token_type": "bearer", "expires_in": 900}
        if headers.get("authorization", "").removeprefix("Bearer ") not in self.valid_tokens:
            return 401, {"error": "unauthorized", "detail": "token expired"}
        if path == "/workflows" and method == "POST":
            spec = json.loads(body)
            if "model" not in spec:
                return 422, {"error": "validation_error", "detail": "model: field required"}
            return 202, {"id": "wf-1", "status": "pending"}
        if path == "/workflows/wf-1/events":
            # The states not yet seen, as the cluster streams them: one event per change.
            events = self.workflow_states[min(self.polls, len(self.workflow_states) - 1) :]
            self.polls = len(self.workflow_states)
            return 200, EventStream(events)
        if path == "/workflows/wf-1":
            state = self.workflow_states[min(self.polls, len(self.workflow_states) - 1)]
            self.polls += 1
            return 200, state
        if path.startswith("/datasets") and method == "POST":
            if b"bad-target" in body:
                detail = {"message": "no target column 'kind'", "location": {"column": "kind"}}
                return 422, {"error": "invalid_dataset", "detail": detail}
            return 201, DATASET
        if path == "/datasets":
            return 200, {"datasets": [BUILTIN], "uploaded": [DATASET_SUMMARY]}
        if path == f"/datasets/{DATASET['id']}":
            return (204, None) if method == "DELETE" else (200, DATASET)
        if path == "/predict":
            rows = json.loads(body)["rows"]
            return 200, {
                "predictions": [7] * len(rows),
                "labels": ["seven"] * len(rows),
                "probabilities": [[0.1, 0.9]] * len(rows),
            }
        return 404, {"error": "not_found", "detail": path}


@pytest.fixture
def fake_api(monkeypatch) -> Iterator[tuple[FakeApi, str]]:
    """Run FakeApi on a free port and point every NEXUS_<NAME>_URL at it."""
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, payload = api.handle(self.command, self.path, headers, body)
            data = b"" if payload is None else json.dumps(payload).encode()
            content_type = "application/json"
            if isinstance(payload, EventStream):
                events = [f"event: workflow\ndata: {json.dumps(item)}\n\n" for item in payload]
                data, content_type = "".join(events).encode(), "text/event-stream"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _serve

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for name in ("auth", "cluster", "memory", "trainer", "validator", "deployer"):
        monkeypatch.setenv(f"NEXUS_{name.upper()}_URL", url)
    yield api, url
    server.shutdown()
    server.server_close()
