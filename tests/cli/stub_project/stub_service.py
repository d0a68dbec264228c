"""A stand-in for a Nexus service: answers /readyz, reports its env, keeps a child process.

Used only by tests/cli to drive the real `start_stack` orchestration before the real
services exist. Standard library only, so it starts in milliseconds.
"""

import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _how_it_started(name: str) -> dict[str, bool]:
    """Whether the migration had finished when this service started, and whether it was
    forked from the stack's warm server (which imported its app module first)."""
    marker = os.path.join(os.environ["NEXUS_HOME"], "run", "stub-migrated")
    return {
        "migrated_before_start": os.path.exists(marker),
        "forked_warm": f"services.{name}.app" in sys.modules,
    }


def serve(name: str) -> None:
    if os.environ.get("NEXUS_STUB_DIE") == name:
        print(f"{name}: told to die by NEXUS_STUB_DIE", flush=True)
        sys.exit(3)
    started = _how_it_started(name)
    # Like a real service's node processes: a child in the service's process group.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    run = os.path.join(os.environ["NEXUS_HOME"], "run")
    with open(os.path.join(run, f"stub-{name}-child.pid"), "w") as handle:
        handle.write(str(child.pid))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/readyz":
                body = {"status": "ok"}
            elif self.path == "/env":
                body = {k: v for k, v in os.environ.items() if k.startswith("NEXUS_")}
            elif self.path == "/started":
                body = started
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    port = int(os.environ[f"NEXUS_{name.upper()}_PORT"])
    print(f"{name}: listening on {port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
