"""Where the local stack keeps its state: one folder, NEXUS_HOME (default ./.nexus)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "./.nexus"


@dataclass(frozen=True)
class NexusHome:
    """Paths under NEXUS_HOME; always absolute so child processes may run from any cwd."""

    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def nats(self) -> Path:
        return self.root / "nats"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def state_file(self) -> Path:
        return self.run / "stack.json"

    @property
    def credentials_file(self) -> Path:
        return self.root / "credentials.json"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def ensure(self) -> NexusHome:
        """Create the folders; secrets/ is private because it holds keys."""
        for folder in (self.root, self.logs, self.run, self.nats, self.artifacts):
            folder.mkdir(parents=True, exist_ok=True)
        self.secrets.mkdir(mode=0o700, exist_ok=True)
        # mkdir's mode is filtered by umask and ignored for an existing folder.
        self.secrets.chmod(0o700)
        return self


def resolve_home(home: str | os.PathLike[str] | None = None) -> NexusHome:
    """An explicit path wins, then NEXUS_HOME, then ./.nexus."""
    raw = home if home is not None else os.environ.get("NEXUS_HOME", DEFAULT_HOME)
    return NexusHome(Path(raw).expanduser().resolve())
