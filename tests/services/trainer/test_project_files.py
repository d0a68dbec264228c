"""The generated project's scripts run as they say: train.py retrains the same model from the
configs, and backup-checkpoints.sh packs the checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import uuid
from pathlib import Path

import pytest

from services.trainer.service.design import design_network
from services.trainer.service.project_files import write_backup_script, write_design_files
from shared.artifacts import ArtifactStore, local_path
from shared.spec import WorkflowSpec
from tests.services.trainer.conftest import REPO_ROOT, TrainedRun


def run_train_script(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a generated train.py (`command`: the interpreter, its flags, the script, its
    arguments) to success; its output."""
    run = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.fixture(scope="module")
def project(trained_run: TrainedRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained workflow's folder with phase 2's and phase 3's files added."""
    payload = trained_run.payload
    spec = WorkflowSpec.model_validate(payload["spec"])
    store, tenant, workflow = trained_run.store, payload["tenant_id"], payload["workflow_id"]
    design = design_network(spec)
    assert design.architecture == payload["architecture"]
    write_design_files(store, tenant, uuid.UUID(workflow), spec, design)
    write_backup_script(store, tenant, uuid.UUID(workflow), uuid.UUID(payload["job_id"]), 2)
    copy = tmp_path_factory.mktemp("bundle") / "project"
    shutil.copytree(local_path(store.workflow_url(tenant, workflow)), copy)
    return copy / "neural"


def test_design_files_hold_the_architecture_and_missing_phase1_configs(project: Path) -> None:
    architecture = json.loads((project / "configs/architecture.json").read_text())
    assert architecture["input_dim"] == 64 and architecture["num_classes"] == 10
    training = json.loads((project / "configs/training.json").read_text())
    assert training["epochs"] == 3 and training["seed"] == 42
    assert json.loads((project / "configs/dataset.json").read_text())["name"] == "digits"


def test_train_script_retrains_the_same_model_from_the_configs(project: Path) -> None:
    original = json.loads((project / "models/model-metadata.json").read_text())
    (project / "models").rename(project / "models-from-node")
    # Run from another directory, with the nexus package importable as where it is installed.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, str(project / "scripts/train.py"), "--epochs", "3"]
    assert "epoch 3/3" in run_train_script(command, project.parent.parent, env)
    retrained = json.loads((project / "models/model-metadata.json").read_text())
    assert (project / "models/model.safetensors").is_file()
    # Same seed, split, architecture and loop on one thread: bit-identical weights.
    assert retrained["weights_sha256"] == original["weights_sha256"]
    assert retrained["extra"]["trained_by"] == "neural/scripts/train.py"


def test_train_script_runs_where_nexus_is_not_installed(project: Path, tmp_path: Path) -> None:
    """A new virtualenv that sees the third-party packages of requirements-train.txt (this
    one's site-packages, whose editable Nexus install it does not load) but no Nexus: train.py
    runs from a copy of the project on its copy of the library, in isolated mode."""
    copy = shutil.copytree(project, tmp_path / "neural")
    shutil.rmtree(copy / "models")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = venv.glob("lib/python*/site-packages")
    (site / "third_party.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    look = "import importlib.util as u; print(u.find_spec('shared'), u.find_spec('services'))"
    found = subprocess.run([python, "-I", "-c", look], env=env, capture_output=True, text=True)
    assert found.stdout.split() == ["None", "None"], found.stderr

    command = [python, "-I", str(copy / "scripts/train.py"), "--epochs", "1"]
    assert "epoch 1/1" in run_train_script(command, tmp_path, env)
    assert (copy / "models/model.safetensors").is_file() and (copy / "models/model.onnx").is_file()
    pins = (copy / "requirements-train.txt").read_text()
    assert "torch==" in pins and "scikit-learn==" in pins


def test_backup_script_archives_every_checkpoint_file(project: Path, tmp_path: Path) -> None:
    script = project / "scripts/backup-checkpoints.sh"
    run = subprocess.run(
        ["bash", str(script), str(tmp_path / "backups")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    archive = Path(run.stdout.strip())
    assert archive.parent == tmp_path / "backups" and archive.name.endswith(".tar.gz")
    with tarfile.open(archive) as tar:
        names = {m.name for m in tar.getmembers() if m.isfile()}
    on_disk = {
        str(p.relative_to(project)) for p in (project / "checkpoints").rglob("*") if p.is_file()
    }
    assert names == on_disk
    assert "checkpoints/epoch-0002/model.safetensors" in names


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [([], 2, "usage"), (["dest", "/nonexistent/checkpoints"], 1, "no checkpoints directory")],
)
def test_backup_script_refuses_bad_arguments(
    project: Path, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    script = project / "scripts/backup-checkpoints.sh"
    run = subprocess.run(["bash", str(script), *args], cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == code and message in run.stderr


def test_rendered_scripts_name_their_workflow(trained_run: TrainedRun, project: Path) -> None:
    store: ArtifactStore = trained_run.store
    payload = trained_run.payload
    url = store.workflow_url(payload["tenant_id"], payload["workflow_id"], "neural/scripts")
    assert payload["workflow_id"] in store.read_text(f"{url}/train.py")
    assert payload["job_id"] in store.read_text(f"{url}/backup-checkpoints.sh")


def test_train_script_retrains_a_regression_model_to_the_bit(tmp_path: Path, one_thread) -> None:
    """diabetes's generated train.py: the same one-output network and target standardization
    as the node trained, printed with R² and RMSE, not accuracy."""
    from services.trainer.node_task import run_training
    from tests.services.trainer.conftest import CollectingContext, train_payload

    spec = WorkflowSpec.model_validate(
        {
            "name": "diabetes-test",
            "dataset": "diabetes",
            "training": {"strategy": "single", "epochs": 3, "batch_size": 16},
        }
    )
    store = ArtifactStore(f"file://{tmp_path / 'artifacts'}")
    payload = train_payload(store, spec)
    run_training(payload, CollectingContext(store.root_url))
    tenant, workflow = payload["tenant_id"], payload["workflow_id"]
    write_design_files(store, tenant, uuid.UUID(workflow), spec, design_network(spec))
    project = Path(local_path(store.workflow_url(tenant, workflow))) / "neural"
    original = json.loads((project / "models/model-metadata.json").read_text())
    assert original["target_normalization"]["std"] > 1
    (project / "models").rename(project / "models-from-node")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    output = run_train_script([sys.executable, str(project / "scripts/train.py")], tmp_path, env)
    assert "R²" in output and "RMSE" in output and "acc" not in output
    retrained = json.loads((project / "models/model-metadata.json").read_text())
    assert retrained["weights_sha256"] == original["weights_sha256"]
    assert retrained["target_normalization"] == original["target_normalization"]
