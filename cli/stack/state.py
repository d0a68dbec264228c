"""The running stack as recorded in run/stack.json: what `up` started and where it listens."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cli.stack.errors import StackError
from cli.stack.home import NexusHome
from cli.stack.supervisor import ProcessRecord


@dataclass
class StackInfo:
    """Everything a caller needs to reach (and later stop) a local stack."""

    home: Path
    database_url: str = ""
    nats_url: str = ""
    artifacts: str = ""
    # name -> base URL, e.g. {"auth": "http://127.0.0.1:8001", ...}
    services: dict[str, str] = field(default_factory=dict)
    # Processes `up` started (embedded nats/postgres and the services), in start order.
    processes: list[ProcessRecord] = field(default_factory=list)
    # The NEXUS_* variables the services were started with (file paths, never secret values).
    env: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    # Seconds per step ("nats", "postgres", "migrate", "services") and "total".
    timings: dict[str, float] = field(default_factory=dict)
    # True when `start_stack` found this stack already running and started nothing.
    already_running: bool = False

    def url(self, name: str) -> str:
        return self.services[name]

    def process(self, name: str) -> ProcessRecord | None:
        return next((rec for rec in self.processes if rec.name == name), None)

    def to_json(self) -> dict:
        data = asdict(self)
        data["home"] = str(self.home)
        data.pop("already_running")
        return data

    @classmethod
    def from_json(cls, data: dict) -> StackInfo:
        data = dict(data)
        data["home"] = Path(data["home"])
        data["processes"] = [ProcessRecord.from_json(rec) for rec in data.get("processes", [])]
        return cls(**data)


def save_state(home: NexusHome, info: StackInfo) -> None:
    """Write atomically and privately: it may hold an external database URL with a password."""
    home.run.mkdir(parents=True, exist_ok=True)
    tmp = home.state_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(info.to_json(), handle, indent=2)
    os.replace(tmp, home.state_file)


def load_state(home: NexusHome) -> StackInfo | None:
    try:
        return StackInfo.from_json(json.loads(home.state_file.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise StackError(
            f"{home.state_file} is unreadable ({exc}); stop the processes it lists and remove it"
        ) from exc


def clear_state(home: NexusHome) -> None:
    home.state_file.unlink(missing_ok=True)
