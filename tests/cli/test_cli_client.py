"""User commands over real HTTP: login cache, token refresh, errors, follow, predict."""

from __future__ import annotations

import json
import stat

import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli.client import NexusClient
from cli.follow import follow_workflow
from cli.main import app

WIDE = {"COLUMNS": "200"}


def nexus(*args: str):
    return CliRunner().invoke(app, list(args), env=WIDE)


def phase(number: int, name: str, status: str) -> dict:
    return {
        "phase": number,
        "name": name,
        "status": status,
        "started_at": None,
        "finished_at": None,
        "detail": None,
    }


NAMES = ["setup", "configure", "train", "validate", "deploy"]


def workflow(done: int, status: str = "running", progress=None, result=None, error=None):
    phases = [phase(i + 1, n, "completed" if i < done else "pending") for i, n in enumerate(NAMES)]
    if status == "failed":
        phases[done]["status"] = "failed"
    return {
        "id": "wf-1",
        "name": "digits",
        "status": status,
        "current_phase": min(done + 1, 5),
        "phases": phases,
        "progress": progress,
        "error": error,
        "result": result,
    }


RESULT = {
    "served_url": "http://127.0.0.1:8100",
    "model_id": "m1",
    "report_uri": "file:///nowhere/performance-report.md",
    "test_accuracy": 0.97,
}


def test_login_caches_private_credentials(home, fake_api):
    result = nexus("login", "ada@example.com", "--password", "right")

    assert result.exit_code == 0, result.output
    creds = json.loads(home.credentials_file.read_text())
    assert creds["access_token"] == "access-1"
    assert stat.S_IMODE(home.credentials_file.stat().st_mode) == 0o600
    _api, _url = fake_api
    method, path, _headers, body = _api.requests[-1]
    assert (method, path) == ("POST", "/auth/token")
    assert b"username=ada%40example.com" in body


def test_wrong_password_prints_the_servers_error(home, fake_api):
    result = nexus("login", "ada@example.com", "--password", "wrong")

    assert result.exit_code == 1
    assert "invalid_credentials: wrong e-mail or password" in result.output
    assert not home.credentials_file.exists()


def test_expired_token_is_refreshed_once(home, fake_api):
    api, _url = fake_api
    assert nexus("login", "ada@example.com", "--password", "right").exit_code == 0
    api.valid_tokens = {"access-2"}  # access-1 expired on the server
    api.workflow_states = [workflow(5, "completed", result=RESULT)]

    with NexusClient(home) as client:
        assert client.workflow("wf-1")["status"] == "completed"

    assert [path for _m, path, _h, _b in api.requests][-3:] == [
        "/workflows/wf-1",
        "/auth/refresh",
        "/workflows/wf-1",
    ]
    creds = json.loads(home.credentials_file.read_text())
    assert creds["access_token"] == "access-2"
    assert creds["refresh_token"] == "refresh-1"  # kept when the server does not rotate it


def test_run_prints_the_id_or_the_validation_error(home, fake_api, tmp_path):
    assert nexus("login", "ada@example.com", "--password", "right").exit_code == 0
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("name: digits\nmodel: {type: mlp}\n")
    bad.write_text("name: digits\n")

    accepted = nexus("run", str(good))
    rejected = nexus("run", str(bad))

    assert accepted.exit_code == 0, accepted.output
    assert "wf-1" in accepted.output
    assert rejected.exit_code == 1
    assert "validation_error: model: field required (HTTP 422" in rejected.output


def test_not_logged_in_says_what_to_do(home, fake_api, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: x\nmodel: {}\n")
    result = nexus("run", str(spec))
    assert result.exit_code == 1
    assert "nexus login" in result.output


def test_follow_ends_with_the_result(home, fake_api):
    api, _url = fake_api
    assert nexus("login", "ada@example.com", "--password", "right").exit_code == 0
    training = {"epoch": 3, "epochs": 10, "train_loss": 0.41, "val_accuracy": 0.91}
    api.workflow_states = [
        workflow(0),
        workflow(2, progress=training),
        workflow(5, "completed", result=RESULT),
    ]
    console = Console(record=True, width=120)

    with NexusClient(home) as client:
        final = follow_workflow(client, "wf-1", console, interval=0.01)

    assert final["result"]["served_url"] == RESULT["served_url"]
    printed = console.export_text()
    assert all(f"phase {i} {name}: completed" in printed for i, name in enumerate(NAMES, 1))
    # One request for the state, then the event stream: no polling.
    paths = [path for _method, path, _headers, _body in api.requests]
    assert paths.count("/workflows/wf-1") == 1 and paths.count("/workflows/wf-1/events") == 1


def test_phase_details_and_figures_read_as_people_write_them() -> None:
    from cli.render import detail_text, number

    detail = {"test_accuracy": 0.9814814814814815, "nodes": ["a", "b", "c", "d", "e", "f"]}
    detail["checks"] = {"passed": True, "p99_ms": 0.000123456}
    assert detail_text(detail) == (
        "test_accuracy 0.9815  nodes [a, b, c, d, … 6 in all]  "
        "checks {passed True, p99_ms 0.0001235}"
    )
    assert (number(12345.678), number(3), number(0.5)) == ("12,346", "3", "0.5")


def test_follow_of_a_failed_workflow_exits_1(home, fake_api):
    api, _url = fake_api
    assert nexus("login", "ada@example.com", "--password", "right").exit_code == 0
    api.workflow_states = [workflow(2, "failed", error="train: loss diverged")]

    result = nexus("workflow", "follow", "wf-1")

    assert result.exit_code == 1
    assert "loss diverged" in result.output


def test_predict_by_workflow_id(home, fake_api):
    api, url = fake_api
    assert nexus("login", "ada@example.com", "--password", "right").exit_code == 0
    api.workflow_states = [workflow(5, "completed", result={**RESULT, "served_url": url})]

    result = nexus("predict", "wf-1", "--rows", "[[0, 1], [2, 3]]")

    assert result.exit_code == 0, result.output
    assert result.output.count("seven") == 2
    assert json.loads(api.requests[-1][3]) == {"rows": [[0, 1], [2, 3]]}


@pytest.mark.parametrize("rows", ["not json", "[]", '{"x": 1}'])
def test_predict_rejects_bad_rows(home, rows):
    result = nexus("predict", "http://127.0.0.1:1", "--rows", rows)
    assert result.exit_code == 1
    assert "rows" in result.output


def test_show_and_report_print_phases_and_the_local_report(home, fake_api, tmp_path):
    api, _url = fake_api
    report = tmp_path / "performance-report.md"
    report.write_text("# Performance report\n\ntest accuracy [measured]: 0.97\n")
    result = {**RESULT, "report_uri": f"file://{report}"}
    api.workflow_states = [workflow(5, "completed", result=result)]
    assert nexus("login", "ada@example.com", "--password", "right").exit_code == 0

    shown = nexus("workflow", "show", "wf-1")
    printed_report = nexus("report", "wf-1")

    assert shown.exit_code == 0, shown.output
    assert all(name in shown.output for name in NAMES)
    assert printed_report.exit_code == 0, printed_report.output
    assert f"file://{report}" in printed_report.output
    assert "test accuracy [measured]: 0.97" in printed_report.output


def test_dataset_commands_upload_list_show_and_delete(home, fake_api, tmp_path):
    api, _url = fake_api
    assert nexus("login", "ada@example.com", "--password", "right").exit_code == 0
    data = tmp_path / "plants.csv"
    data.write_text("width,shade,kind\n0.25,red,k1\n")

    uploaded = nexus("dataset", "upload", str(data), "--categorical", "shade", "--target", "kind")
    assert uploaded.exit_code == 0, uploaded.output
    method, path, headers, body = api.requests[-1]
    assert (method, path.split("?")[0]) == ("POST", "/datasets")
    assert "categorical=shade" in path and "target=kind" in path
    assert headers["content-type"].startswith("multipart/form-data")
    assert b'filename="plants.csv"' in body and b"0.25,red,k1" in body
    for shown in ("60 rows, 2 features", "k0 (30)", "codes 0..1 = blue, red", "dataset: 5f0c"):
        assert shown in uploaded.output

    listed = nexus("dataset", "list")
    assert listed.exit_code == 0 and "iris" in listed.output and "plants" in listed.output
    shown = nexus("dataset", "show", "5f0c1d2e-0000-4000-8000-000000000001")
    assert shown.exit_code == 0 and "first rows" in shown.output
    deleted = nexus("dataset", "delete", "5f0c1d2e-0000-4000-8000-000000000001")
    assert deleted.exit_code == 0 and api.requests[-1][0] == "DELETE"

    data.write_text("bad-target\n")
    refused = nexus("dataset", "upload", str(data))
    assert refused.exit_code == 1
    assert "no target column 'kind' [column kind]" in refused.output


def test_validation_details_read_as_field_and_message() -> None:
    from cli.client import format_detail

    detail = [
        {"field": "dataset", "message": "unknown dataset 'mnist'"},
        {"field": "training.epochs", "message": "Input should be greater than or equal to 1"},
    ]
    assert format_detail(detail) == (
        "dataset: unknown dataset 'mnist'; "
        "training.epochs: Input should be greater than or equal to 1"
    )
