"""`nexus run`, `workflow show|follow`, `report`, `predict`: a workflow from spec to answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
import yaml
from rich.markdown import Markdown

from cli.client import CliError, NexusClient
from cli.commands.account import client
from cli.follow import follow_workflow
from cli.output import console, fail, friendly_errors
from cli.render import local_path, predictions_table, print_result, workflow_view


def read_spec(path: Path) -> dict:
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(spec, dict):
        raise CliError(f"{path} must hold a mapping (name, model, dataset, ...), not {spec!r}")
    return spec


def follow_to_end(api: NexusClient, workflow_id: str) -> dict:
    """Follow, print the outcome, and exit 1 when the workflow failed."""
    try:
        workflow = follow_workflow(api, workflow_id, console)
    except KeyboardInterrupt:
        console.print(f"stopped following; resume with `nexus workflow follow {workflow_id}`")
        raise typer.Exit(130) from None
    if workflow.get("status") == "failed":
        raise fail(f"workflow {workflow_id} failed: {workflow.get('error') or 'no reason given'}")
    print_result(console, workflow)
    return workflow


def submit(api: NexusClient, spec_path: Path) -> str:
    accepted = api.submit_workflow(read_spec(spec_path))
    workflow_id = str(accepted["id"])
    console.print(f"workflow [bold]{workflow_id}[/] accepted ({accepted.get('status', 'pending')})")
    return workflow_id


@friendly_errors
def run(
    spec: Path = typer.Argument(..., exists=True, dir_okay=False, help="Workflow spec (YAML)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Show progress until it ends."),
) -> None:
    """Submit a workflow spec to the cluster service; print its id."""
    with client() as api:
        workflow_id = submit(api, spec)
        if follow:
            started = time.monotonic()
            follow_to_end(api, workflow_id)
            console.print(f"finished in {time.monotonic() - started:.1f}s")


@friendly_errors
def workflow_show(
    workflow_id: str = typer.Argument(..., help="Workflow id."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON instead."),
) -> None:
    """Print a workflow: status, phases, training progress and result."""
    with client() as api:
        workflow = api.workflow(workflow_id)
    if as_json:
        console.print_json(data=workflow)
    else:
        console.print(workflow_view(workflow))


@friendly_errors
def workflow_follow(workflow_id: str = typer.Argument(..., help="Workflow id.")) -> None:
    """Follow a running workflow until it completes or fails."""
    with client() as api:
        follow_to_end(api, workflow_id)


@friendly_errors
def workflow_retry(
    workflow_id: str = typer.Argument(..., help="The failed workflow's id."),
    learning_rate: float | None = typer.Option(None, help="A new learning rate."),
    grad_clip_norm: float | None = typer.Option(None, help="Clip each step's gradient norm."),
    epochs: int | None = typer.Option(None, help="Train up to this many epochs in all."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Show progress until it ends."),
) -> None:
    """Run a failed workflow again, its training going on from the newest checkpoint."""
    changes = {"learning_rate": learning_rate, "grad_clip_norm": grad_clip_norm, "epochs": epochs}
    with client() as api:
        retry = api.retry_workflow(workflow_id, {k: v for k, v in changes.items() if v is not None})
        console.print(f"workflow {retry['id']} retries {workflow_id}")
        if follow:
            follow_to_end(api, retry["id"])


@friendly_errors
def report(workflow_id: str = typer.Argument(..., help="Workflow id.")) -> None:
    """Print where a workflow's performance report is, and the report itself when local."""
    with client() as api:
        workflow = api.workflow(workflow_id)
    uri = (workflow.get("result") or {}).get("report_uri")
    if not uri:
        raise fail(f"workflow {workflow_id} has no report yet (status {workflow.get('status')})")
    console.print(f"report: {uri}", soft_wrap=True)  # whole, to copy from any terminal
    path = local_path(uri)
    if path is not None and path.is_file():
        console.print(Markdown(path.read_text()))


def parse_rows(rows: str | None, file: Path | None) -> list:
    if (rows is None) == (file is None):
        raise CliError("give exactly one of --rows '[[...], ...]' or --file rows.json")
    text = rows if rows is not None else file.read_text()  # type: ignore[union-attr]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"rows are not valid JSON: {exc}") from exc
    if isinstance(data, dict) and "rows" in data:
        data = data["rows"]
    if isinstance(data, list) and data and not isinstance(data[0], list):
        data = [data]  # one flat row is the common case at a prompt
    if not isinstance(data, list) or not data:
        raise CliError("rows must be a non-empty JSON list of rows, e.g. [[0.1, 0.2, ...]]")
    return data


@friendly_errors
def predict(
    target: str = typer.Argument(..., help="A served model URL, or a workflow id."),
    rows: str | None = typer.Option(None, help="JSON rows, e.g. '[[0, 1, ...]]'."),
    file: Path | None = typer.Option(None, exists=True, dir_okay=False, help="JSON rows file."),
) -> None:
    """Ask a served model for predictions."""
    data = parse_rows(rows, file)
    with client() as api:
        url: str | None = target
        if not target.startswith(("http://", "https://")):
            url = (api.workflow(target).get("result") or {}).get("served_url")
        if not url:
            raise fail(f"workflow {target} has no served model yet")
        answer = api.predict(url, data)
    console.print(predictions_table(answer, data))
