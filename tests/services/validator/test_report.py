"""The files phase 4 writes: the markdown report with real figures, and validation.py,
which re-checks the model on its own and fails when a gate does."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.validator.models import Validation
from services.validator.service.conclude import render_project_files
from services.validator.service.gates import apply_gates
from shared.project_layout import ProjectFile, manual_report_path
from tests.services.validator.conftest import DIGITS_SPEC, MeasuredValidation

REPORT_PATH = ProjectFile.REPORT
SCRIPT_PATH = ProjectFile.VALIDATION_SCRIPT
CONFIG_PATH = ProjectFile.VALIDATION_CONFIG

GATES = {"min_accuracy": 0.85, "max_p99_latency_ms": 100.0, "max_train_val_gap": 0.05}


def validation(trigger: str = "phase") -> Validation:
    return Validation(
        id=uuid.uuid4(),
        tenant_id="t-report",
        workflow_id=uuid.uuid4(),
        trigger=trigger,
        model_uri="file:///models",
        status="running",
        spec=DIGITS_SPEC,
        gates={**GATES, "min_nodes": 4},
        results={},
    )


@pytest.fixture
def project(tmp_path: Path, digits_model: Path, measured: MeasuredValidation) -> Path:
    """A generated project as phase 4 leaves it: models/ from phase 3, files from phase 4."""
    result = measured.event.result
    files = render_project_files(
        validation(), result.model_dump(mode="json"), apply_gates(GATES, result), datetime.now(UTC)
    )
    assert set(files) == {REPORT_PATH, SCRIPT_PATH, CONFIG_PATH}
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    shutil.copytree(digits_model, tmp_path / "neural/models")
    return tmp_path / "neural"


def run_script(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Run from the script's own folder, as a user of the generated project would.
    return subprocess.run(
        [sys.executable, "validation.py", *args],
        cwd=project / "tests",
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_holds_the_measured_figures(project: Path, measured: MeasuredValidation) -> None:
    result = measured.event.result
    text = (project / "reports/performance-report.md").read_text()
    assert "**Outcome: PASSED** (4/4 gates pass)" in text
    assert f"| test | {result.test.accuracy:.4f} |" in text
    assert f"{result.latency.p99_ms:.4f}" in text
    assert "MLP 64 -> 128 -> 64 -> 10 (relu, dropout 0.0)" in text
    assert "`digits` (split seed 42)" in text
    for section in ("Per-class metrics", "Confusion matrix", "Throughput", "Test suite"):
        assert f"## {section}" in text
    assert "| `max_train_val_gap` | train minus validation accuracy |" in text
    assert "sharded inference in one process" in text
    # The confusion matrix rows add up to the test split.
    first_row = next(line for line in text.splitlines() if line.startswith("| **0** |"))
    assert sum(int(cell) for cell in first_row.strip("| ").split(" | ")[1:]) == 27


def test_a_failed_gate_is_marked_in_the_report(measured: MeasuredValidation) -> None:
    result = measured.event.result
    strict = {**GATES, "min_accuracy": 0.999}
    files = render_project_files(
        validation("manual"),
        result.model_dump(mode="json"),
        apply_gates(strict, result),
        datetime.now(UTC),
    )
    (path,) = files  # a manual re-run writes only its own report
    assert path.startswith("neural/reports/validations/") and path.endswith(".md")
    assert path == manual_report_path(path.rsplit("/", 1)[1].removesuffix(".md"))
    text = files[path]
    assert "**Outcome: FAILED** (3/4 gates pass)" in text
    assert "| `min_accuracy` | test accuracy |" in text and "| >= 0.999 | FAIL |" in text


def test_validation_script_rechecks_the_model_and_passes(
    project: Path, measured: MeasuredValidation
) -> None:
    completed = run_script(project, "--json")
    assert completed.returncode == 0, completed.stderr
    rechecked = json.loads(completed.stdout)
    result = measured.event.result
    # The same split and weights give the same accuracy as the validator node measured.
    assert rechecked["test_accuracy"] == result.test.accuracy
    assert rechecked["train_val_gap"] == pytest.approx(result.train_val_gap)
    assert rechecked["passed"] and all(c["passed"] for c in rechecked["checks"])


def test_validation_script_fails_when_a_config_sets_an_impossible_gate(project: Path) -> None:
    # Another config file with a stricter gate wins: the strictest value of all is applied.
    (project / "configs/training.json").write_text(
        json.dumps({"epochs": 8, "gates": {"max_p99_latency_ms": 1e-9}})
    )
    completed = run_script(project)
    assert completed.returncode == 1
    assert "PASS  min_accuracy" in completed.stdout
    assert "FAIL  max_p99_latency_ms" in completed.stdout
    assert completed.stdout.strip().endswith("FAILED")


def test_validation_script_refuses_tampered_weights(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = project / "models/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    # In-process (a fresh interpreter costs seconds of imports); main() is what __main__ runs.
    spec = importlib.util.spec_from_file_location(
        "generated_validation", project / SCRIPT_PATH.removeprefix("neural/")
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main([]) == 2
    assert "sha256" in capsys.readouterr().err


@pytest.fixture
def regression_project(
    tmp_path: Path, diabetes_model: Path, measured_regression: MeasuredValidation
) -> Path:
    result = measured_regression.event.result
    record = validation()
    record.spec = {"name": "diabetes-test", "dataset": "diabetes"}
    record.gates = {"min_nodes": 4}
    files = render_project_files(
        record, result.model_dump(mode="json"), apply_gates({}, result), datetime.now(UTC)
    )
    for path, text in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    shutil.copytree(diabetes_model, tmp_path / "neural/models")
    return tmp_path / "neural"


def test_a_regression_report_shows_r2_and_errors_in_the_targets_units(
    regression_project: Path, measured_regression: MeasuredValidation
) -> None:
    result = measured_regression.event.result
    text = (regression_project / "reports/performance-report.md").read_text()
    assert "**Outcome: PASSED** (4/4 gates pass)" in text
    assert "## Regression quality" in text and f"| test | {result.test.r2:.4f} |" in text
    assert f"RMSE {result.test.rmse:.4g}" in text
    assert "| `min_r2` | test R² |" in text
    assert "Confusion matrix" not in text and "accuracy" not in text.lower()
    assert "largest value difference" in text
    config = json.loads((regression_project / "configs/validation.json").read_text())
    assert config["task"] == "regression" and config["gates"]["min_r2"] == 0.3


def test_validation_script_rechecks_a_regression_model(
    regression_project: Path, measured_regression: MeasuredValidation
) -> None:
    completed = run_script(regression_project, "--json")
    assert completed.returncode == 0, completed.stderr
    rechecked = json.loads(completed.stdout)
    result = measured_regression.event.result
    assert rechecked["test_r2"] == pytest.approx(result.test.r2, abs=1e-5)
    assert rechecked["test_rmse"] == pytest.approx(result.test.rmse, rel=1e-4)
    assert rechecked["train_val_r2_gap"] == pytest.approx(result.train_val_r2_gap, abs=1e-5)
    assert rechecked["passed"] and "test_accuracy" not in rechecked
    # A stricter R² in another config fails it, by name.
    (regression_project / "configs/training.json").write_text(
        json.dumps({"gates": {"min_r2": 0.99, "max_rmse": 1.0}})
    )
    failed = run_script(regression_project)
    assert failed.returncode == 1
    assert "FAIL  min_r2" in failed.stdout and "FAIL  max_rmse" in failed.stdout
    assert "PASS  max_p99_latency_ms" in failed.stdout
