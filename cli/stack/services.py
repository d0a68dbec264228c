"""The six Nexus services: their ports, URLs, and the environment they are started with."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared.settings import SERVICE_PORTS

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Service:
    name: str
    default_port: int

    @property
    def port_var(self) -> str:
        return f"NEXUS_{self.name.upper()}_PORT"

    @property
    def url_var(self) -> str:
        return f"NEXUS_{self.name.upper()}_URL"

    @property
    def module(self) -> str:
        return f"services.{self.name}"

    @property
    def app_module(self) -> str:
        """What the service imports before it serves: its app and everything under it."""
        return f"services.{self.name}.app"

    def port(self, env: Mapping[str, str]) -> int:
        raw = env.get(self.port_var, "")
        if not raw:
            return self.default_port
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{self.port_var}={raw!r} is not a port number") from None

    def local_url(self, env: Mapping[str, str]) -> str:
        return f"http://{HOST}:{self.port(env)}"


# In SERVICE_PORTS order; that matters only for logs: auth first, since every other
# service checks tokens.
SERVICES: tuple[Service, ...] = tuple(Service(name, port) for name, port in SERVICE_PORTS.items())
SERVICE_NAMES = tuple(service.name for service in SERVICES)


def service(name: str) -> Service:
    for candidate in SERVICES:
        if candidate.name == name:
            return candidate
    raise ValueError(f"unknown service {name!r}; expected one of {', '.join(SERVICE_NAMES)}")


def base_url(name: str, env: Mapping[str, str] | None = None) -> str:
    """Where a client finds a service: NEXUS_<NAME>_URL, else the default local port."""
    env = os.environ if env is None else env
    svc = service(name)
    return (env.get(svc.url_var) or svc.local_url(env)).rstrip("/")


def stack_env(env: Mapping[str, str]) -> dict[str, str]:
    """Ports and URLs every service gets, so each binds its own and finds the others."""
    wiring: dict[str, str] = {}
    for svc in SERVICES:
        wiring[svc.port_var] = str(svc.port(env))
        wiring[svc.url_var] = svc.local_url(env)
    return wiring
