"""Apply every service's migrations: `python -m shared.migrate [service ...]`.

Uses NEXUS_DATABASE_URL. Run before the services start (the compose stack's migrate step and
`nexus up` both do).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.settings import SERVICE_PORTS, database_url_from_env, normalize_database_url

SERVICES = tuple(SERVICE_PORTS)
_SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


def alembic_config(service: str, database_url: str) -> Config:
    if service not in SERVICES:
        raise ValueError(f"unknown service {service!r}; one of {', '.join(SERVICES)}")
    config = Config()
    config.set_main_option("script_location", str(_SERVICES_DIR / service / "migrations"))
    # '%' is ConfigParser's interpolation character; escape it so URLs survive.
    config.set_main_option(
        "sqlalchemy.url", normalize_database_url(database_url).replace("%", "%%")
    )
    return config


def upgrade(database_url: str, services: tuple[str, ...] | list[str] = SERVICES) -> None:
    for service in services:
        command.upgrade(alembic_config(service, database_url), "head")


def main(argv: list[str]) -> int:
    if not os.environ.get("NEXUS_DATABASE_URL"):
        print("NEXUS_DATABASE_URL is not set", file=sys.stderr)
        return 2
    upgrade(database_url_from_env(), argv or SERVICES)
    print(f"migrated: {', '.join(argv or SERVICES)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
