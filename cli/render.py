"""How workflows, results and predictions look in the terminal."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

STATUS_STYLE = {
    "completed": "green",
    "passed": "green",
    "running": "cyan",
    "pending": "dim",
    "failed": "red",
}


def styled(status: str | None) -> str:
    status = status or "-"
    return f"[{STATUS_STYLE.get(status, 'white')}]{escape(status)}[/]"


def text(value: object) -> str:
    """A server-provided value as literal text (rich would read "[x]" as markup)."""
    return "" if value is None else escape(str(value))


def phases_table(workflow: dict) -> Table:
    title = f"workflow {text(workflow.get('id'))}  {text(workflow.get('name'))}".strip()
    table = Table(title=title)
    for column in ("phase", "name", "status", "started", "finished", "detail"):
        table.add_column(column)
    for phase in workflow.get("phases") or []:
        table.add_row(
            text(phase.get("phase")),
            text(phase.get("name")),
            styled(phase.get("status")),
            text(phase.get("started_at")),
            text(phase.get("finished_at")),
            text(phase.get("detail")),
        )
    return table


def workflow_view(workflow: dict) -> Group:
    lines = [
        f"status: {styled(workflow.get('status'))}   "
        f"current phase: {workflow.get('current_phase') or '-'}",
    ]
    progress = workflow.get("progress")
    if progress:
        score = (
            f"val_r2 {progress['val_r2']}"
            if progress.get("val_r2") is not None
            else f"val_accuracy {progress.get('val_accuracy')}"
        )
        lines.append(
            f"training: epoch {progress.get('epoch')}/{progress.get('epochs')}  "
            f"loss {progress.get('train_loss')}  {score}"
        )
    if workflow.get("error"):
        lines.append(f"[red]error: {text(workflow['error'])}[/]")
    result = workflow.get("result") or {}
    for key in ("served_url", "model_id", "report_uri", "test_accuracy", "test_r2", "test_rmse"):
        if result.get(key) is not None:
            lines.append(f"{key}: {text(result[key])}")
    return Group(phases_table(workflow), *lines)


def local_path(uri: str | None) -> Path | None:
    """The filesystem path of a file:// URI (or a bare path), None for remote URIs."""
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme in ("", "file"):
        return Path(unquote(parts.path if parts.scheme else uri))
    return None


def predictions_table(answer: dict, rows: list) -> Table:
    predictions = answer.get("predictions") or []
    if predictions and isinstance(predictions[0], dict):  # a regression model's values
        return _values_table(predictions, rows)
    table = Table(title="predictions")
    for column in ("row", "prediction", "label", "confidence"):
        table.add_column(column)
    labels = answer.get("labels") or []
    probabilities = answer.get("probabilities") or []
    for index, prediction in enumerate(predictions):
        label = labels[index] if index < len(labels) else ""
        probs = probabilities[index] if index < len(probabilities) else []
        confidence = f"{max(probs):.3f}" if probs else ""
        table.add_row(str(index), text(prediction), text(label), confidence)
    if len(predictions) != len(rows):
        table.caption = f"sent {len(rows)} rows, got {len(predictions)} predictions"
    return table


def _values_table(predictions: list, rows: list) -> Table:
    table = Table(title="predictions")
    for column in ("row", "value"):
        table.add_column(column)
    for index, prediction in enumerate(predictions):
        value = prediction.get("value")
        table.add_row(str(index), f"{value:.4g}" if isinstance(value, float) else text(value))
    if len(predictions) != len(rows):
        table.caption = f"sent {len(rows)} rows, got {len(predictions)} predictions"
    return table


def print_result(console: Console, workflow: dict) -> None:
    result = workflow.get("result") or {}
    console.print(f"[bold green]served at[/] {text(result.get('served_url'))}")
    console.print(f"[bold]report[/]    {text(result.get('report_uri'))}")
    if result.get("test_accuracy") is not None:
        console.print(f"[bold]test accuracy[/] {result['test_accuracy']}")
    if result.get("test_r2") is not None:
        console.print(f"[bold]test R²[/] {result['test_r2']}  RMSE {result.get('test_rmse')}")
