"""docs/api.md lists every route the services serve, so the docs cannot drift silently."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from shared.settings import SERVICE_PORTS

ROOT = Path(__file__).resolve().parents[1]
UNDOCUMENTED = {"/healthz", "/readyz", "/metrics"}  # described once for every service


@pytest.mark.parametrize("service", list(SERVICE_PORTS))
def test_every_route_is_in_the_api_docs(service: str, service_env: dict[str, str]) -> None:
    api_doc = (ROOT / "docs" / "api.md").read_text()
    app = importlib.import_module(f"services.{service}.app").create_app()
    for path, operations in app.openapi()["paths"].items():
        if path in UNDOCUMENTED:
            continue
        for method in operations:
            assert f"| {method.upper()} | `{path}` |" in api_doc, f"{method.upper()} {path}"
