"""Files the trainer writes into a workflow's generated project (the artifact store).

Scripts are rendered from services/trainer/templates/ so they read as ordinary files.
"""

from __future__ import annotations

import json
import uuid
from importlib.metadata import version
from pathlib import Path
from string import Template
from typing import Any

from services.trainer.service.design import NetworkDesign
from shared.artifacts import ArtifactStore
from shared.project_layout import ProjectFile
from shared.spec import TEST_FRACTION, VAL_FRACTION, WorkflowSpec

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
SOURCE_ROOT = Path(__file__).resolve().parents[3]
# What train.py imports of Nexus, copied into the project (scripts/nexus_lib/), so that it
# runs where Nexus is not installed: the training library and the few modules it uses.
LIBRARY = (
    "shared/__init__.py",
    "shared/layer_spec.py",
    "shared/processes.py",
    "shared/spec.py",
    "shared/synthetic.py",
    "shared/ml",
)
LIBRARY_DIR = "neural/scripts/nexus_lib"
# The distributions the library imports, pinned in requirements-train.txt to the versions
# that trained the model (torch's CPU wheels: https://download.pytorch.org/whl/cpu).
TRAINING_PACKAGES = (
    "torch",
    "numpy",
    "scikit-learn",
    "safetensors",
    "fsspec",
    "pydantic",
    "psutil",
    "onnx",
    "onnxruntime",
)


def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text())


def render_train_script(spec: WorkflowSpec, workflow_id: uuid.UUID) -> str:
    strategy = spec.training.strategy
    workers = spec.cluster.workers if strategy != "single" else 1
    servers = spec.cluster.parameter_servers if strategy == "parameter_server" else 0
    layouts = {
        "single": "one process",
        "ddp": f"{workers} workers",
        "parameter_server": f"{servers} parameter servers and {workers} workers, "
        f"{spec.training.ps_mode}",
    }
    return _template("train.py.tmpl").substitute(
        name=spec.name,
        workflow_id=workflow_id,
        dataset=spec.dataset,
        val_fraction=VAL_FRACTION,
        test_fraction=TEST_FRACTION,
        strategy=strategy,
        layout=layouts[strategy],
        workers=workers,
        servers=servers,
        world_size=workers + servers,
    )


def render_backup_script(workflow_id: uuid.UUID, job_id: uuid.UUID, checkpoint_count: int) -> str:
    # safe_substitute: the shell's own $variables must pass through untouched.
    return _template("backup-checkpoints.sh.tmpl").safe_substitute(
        nexus_workflow_id=workflow_id,
        nexus_job_id=job_id,
        nexus_checkpoint_count=checkpoint_count,
    )


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2) + "\n"


def write_design_files(
    store: ArtifactStore,
    tenant_id: str,
    workflow_id: uuid.UUID,
    spec: WorkflowSpec,
    design: NetworkDesign,
) -> dict[ProjectFile, str]:
    """Write architecture.json and train.py; returns their URLs by project path.

    Phase 1 (the cluster service) writes training.json and dataset.json; when they are not
    there, they are written from the spec, so train.py can always run.
    """

    def url(path: ProjectFile) -> str:
        return store.workflow_url(tenant_id, workflow_id, path)

    store.write_text(url(ProjectFile.ARCHITECTURE_CONFIG), _dumps(design.architecture))
    store.write_text(url(ProjectFile.TRAIN_SCRIPT), render_train_script(spec, workflow_id))
    write_training_library(store, tenant_id, workflow_id)
    if not store.exists(url(ProjectFile.TRAINING_CONFIG)):
        store.write_text(
            url(ProjectFile.TRAINING_CONFIG), _dumps(spec.training.model_dump(mode="json"))
        )
    if not store.exists(url(ProjectFile.DATASET_CONFIG)):
        dataset = {**design.dataset, "split_seed": spec.training.seed}
        dataset.update(val_fraction=VAL_FRACTION, test_fraction=TEST_FRACTION)
        store.write_text(url(ProjectFile.DATASET_CONFIG), _dumps(dataset))
    return {path: url(path) for path in (ProjectFile.ARCHITECTURE_CONFIG, ProjectFile.TRAIN_SCRIPT)}


def write_training_library(store: ArtifactStore, tenant_id: str, workflow_id: uuid.UUID) -> None:
    """train.py's copy of the library, and the requirements of both."""
    for relative in LIBRARY:
        source = SOURCE_ROOT / relative
        for module in sorted(source.glob("*.py")) if source.is_dir() else [source]:
            path = f"{LIBRARY_DIR}/{module.relative_to(SOURCE_ROOT)}"
            store.write_text(store.workflow_url(tenant_id, workflow_id, path), module.read_text())
    pins = "".join(f"{name}=={version(name)}\n" for name in TRAINING_PACKAGES)
    header = "# What scripts/train.py needs, pinned to the versions that trained the model.\n"
    requirements = store.workflow_url(tenant_id, workflow_id, ProjectFile.TRAIN_REQUIREMENTS)
    store.write_text(requirements, header + pins)


def write_backup_script(
    store: ArtifactStore,
    tenant_id: str,
    workflow_id: uuid.UUID,
    job_id: uuid.UUID,
    checkpoint_count: int,
) -> str:
    url = store.workflow_url(tenant_id, workflow_id, ProjectFile.BACKUP_SCRIPT)
    store.write_text(url, render_backup_script(workflow_id, job_id, checkpoint_count))
    return url
