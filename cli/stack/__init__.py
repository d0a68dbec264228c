"""The local Nexus stack as a Python API (used by `nexus up/down/status` and e2e tests).

Example (ports are optional overrides; every NEXUS_* variable may be overridden):

    info = start_stack(home, {"NEXUS_AUTH_PORT": "18001"}, timeout=120)
    info.url("auth"), info.database_url, info.nats_url, info.env["NEXUS_INTERNAL_TOKEN_FILE"]
    stop_stack(home)

As root, keep `home` out of pytest's tmp_path: each new pytest session resets
/tmp/pytest-of-root to 0700, which locks the embedded Postgres user out of its data.
"""

from cli.stack.errors import StackError, StackPartlyRunning
from cli.stack.home import NexusHome, resolve_home
from cli.stack.lifecycle import restart, running_stack, start_stack, stop_stack
from cli.stack.services import SERVICE_NAMES, SERVICES, base_url
from cli.stack.state import StackInfo, load_state
from cli.stack.status import ComponentStatus, stack_status

__all__ = [
    "SERVICES",
    "SERVICE_NAMES",
    "ComponentStatus",
    "NexusHome",
    "StackError",
    "StackInfo",
    "StackPartlyRunning",
    "base_url",
    "load_state",
    "resolve_home",
    "restart",
    "running_stack",
    "stack_status",
    "start_stack",
    "stop_stack",
]
