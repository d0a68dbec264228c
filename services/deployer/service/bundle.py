"""The files phase 5 adds to a workflow's generated project: serve.py (the model served by
ONNX Runtime alone), its requirements.txt, deploy.sh, the Dockerfile and DEPLOYMENT.md,
rendered from the templates beside this module."""

from __future__ import annotations

import json
import os
import re
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from services.deployer.models import Deployment, RegisteredModel
from shared.artifacts import ArtifactStore, local_path
from shared.project_layout import ProjectFile

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
CONTAINER_PORT = 8080

SERVE_SCRIPT = ProjectFile.SERVE_SCRIPT
SERVE_REQUIREMENTS = ProjectFile.SERVE_REQUIREMENTS
DEPLOY_SCRIPT = ProjectFile.DEPLOY_SCRIPT
DOCKERFILE = ProjectFile.DOCKERFILE
DEPLOYMENT_DOC = ProjectFile.DEPLOYMENT_DOC
# project path -> template
BUNDLE_FILES = {
    SERVE_SCRIPT: "serve.py.tmpl",
    SERVE_REQUIREMENTS: "requirements.txt.tmpl",
    DEPLOY_SCRIPT: "deploy.sh.tmpl",
    DOCKERFILE: "Dockerfile.tmpl",
    DEPLOYMENT_DOC: "DEPLOYMENT.md.tmpl",
}
_EXECUTABLE = (SERVE_SCRIPT, DEPLOY_SCRIPT)
# What the bundle's serve.py imports, pinned in its requirements.txt to the versions here.
SERVING_PACKAGES = ("numpy", "onnxruntime", "fastapi", "uvicorn")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def render(template: str, values: dict[str, str]) -> str:
    """Fill `{{name}}` placeholders (a syntax neither bash, Python nor Docker uses)."""
    text = (TEMPLATES_DIR / template).read_text()
    missing = sorted({m for m in _PLACEHOLDER.findall(text) if m not in values})
    if missing:
        raise KeyError(f"{template} needs values for: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def docker_name(model_name: str) -> str:
    """A Docker repository/container name from a spec name (lowercase, [a-z0-9-])."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    return f"nexus-model-{cleaned or 'unnamed'}"


def bundle_values(
    model: RegisteredModel,
    deployment: Deployment,
    checks: dict[str, Any],
    *,
    deployer_url: str,
) -> dict[str, str]:
    """Template values from the registry, the deployment and what its smoke test saw."""
    example = checks["example"]
    predict = checks["predict"]
    name = docker_name(model.name)
    return {
        "model_name": model.name,
        "model_version": str(model.version),
        "model_id": str(model.id),
        "deployment_id": str(deployment.id),
        "workflow_id": str(model.workflow_id),
        "dataset": checks["dataset"],
        "num_features": str(len(example["request"]["rows"][0])),
        **_task_values(checks),
        "served_url": str(deployment.url),
        "port": str(deployment.port),
        "container_port": str(CONTAINER_PORT),
        "image": f"{name}:v{model.version}",
        "container": name,
        "python": sys.executable,
        **{f"{package}_version": version(package) for package in SERVING_PACKAGES},
        "deployer_url": deployer_url.rstrip("/"),
        "smoke_rows": str(predict["rows"]),
        "example_request": json.dumps(example["request"], separators=(",", ":")),
        "example_response": _one_key_a_line(example["response"]),
    }


def _task_values(checks: dict[str, Any]) -> dict[str, str]:
    """What DEPLOYMENT.md says the model answers and how well it did when deployed."""
    predict, example = checks["predict"], checks["example"]
    if checks.get("task") == "regression":
        rmse = "" if predict["max_rmse"] is None else f", RMSE <= {predict['max_rmse']:g}"
        return {
            "model_kind": "regression model",
            "answers": 'one value per row (`{"predictions": [{"value": ...}, ...]}`)',
            "quality_label": "held-out R² when deployed",
            "quality": f"{predict['r2']:.4f} (RMSE {predict['rmse']:.4g})",
            "quality_gate": f"R² >= {predict['min_r2']:.2f}{rmse}",
            "expected": "values are " + ", ".join(f"{v:g}" for v in example["expected_values"]),
        }
    class_names: list[str] = checks["class_names"]
    return {
        "model_kind": "classifier",
        "answers": f"one of {len(class_names)} classes: {', '.join(class_names)}",
        "quality_label": "held-out accuracy when deployed",
        "quality": f"{predict['accuracy']:.4f}",
        "quality_gate": f"{predict['min_accuracy']:.2f}",
        "expected": "labels are " + ", ".join(example["expected_labels"]),
    }


def _one_key_a_line(body: dict[str, Any]) -> str:
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in body.items()]
    return "{\n" + ",\n".join(lines) + "\n}"


def write_bundle(
    artifacts: ArtifactStore, tenant_id: str, workflow_id: object, values: dict[str, str]
) -> dict[str, str]:
    """Render and write every bundle file (blocking: call it in a thread); returns their URLs."""
    urls: dict[str, str] = {}
    for path, template in BUNDLE_FILES.items():
        url = artifacts.workflow_url(tenant_id, workflow_id, path)
        artifacts.write_text(url, render(template, values))
        if path in _EXECUTABLE and url.startswith("file://"):
            os.chmod(local_path(url), 0o755)
        urls[path] = url
    return urls
