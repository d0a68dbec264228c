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


def number(value: float) -> str:
    """A measured figure as people read it: 0.9815, 1,234, 3.2e-05 — not 0.9814814814814815."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def detail_text(detail: object, depth: int = 0) -> str:
    """A phase's detail on one line: `key value` pairs, figures rounded, long lists counted."""
    if isinstance(detail, dict):
        if depth >= 2:
            return "{…}"
        parts = [f"{key} {detail_text(value, depth + 1)}" for key, value in detail.items()]
        return (
            ("  " if depth == 0 else ", ").join(parts)
            if depth == 0
            else "{" + ", ".join(parts) + "}"
        )
    if isinstance(detail, list):
        shown = ", ".join(detail_text(item, depth + 1) for item in detail[:4])
        return f"[{shown}{f', … {len(detail)} in all' if len(detail) > 4 else ''}]"
    if isinstance(detail, float):
        return number(detail)
    return str(detail)


def phases_table(workflow: dict) -> Table:
    title = f"workflow {text(workflow.get('id'))}  {text(workflow.get('name'))}".strip()
    table = Table(title=title)
    for column in ("phase", "name", "status", "started", "took", "detail"):
        table.add_column(column)
    for phase in workflow.get("phases") or []:
        table.add_row(
            text(phase.get("phase")),
            text(phase.get("name")),
            styled(phase.get("status")),
            text(phase.get("started_at")),
            f"{phase['duration_s']:.2f} s" if phase.get("duration_s") is not None else "",
            text(detail_text(phase["detail"])) if phase.get("detail") else "",
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
        console.print(f"[bold]test accuracy[/] {number(result['test_accuracy'])}")
    if result.get("test_r2") is not None:
        rmse = result.get("test_rmse")
        rmse_text = number(rmse) if rmse is not None else "-"
        console.print(f"[bold]test R²[/] {number(result['test_r2'])}  RMSE {rmse_text}")


def datasets_table(catalog: dict) -> Table:
    table = Table(title="datasets")
    for column in ("id / name", "kind", "task", "rows", "features", "classes", "size"):
        table.add_column(column)
    for builtin in catalog.get("datasets") or []:
        table.add_row(
            text(builtin.get("name")),
            "built-in",
            text(builtin.get("task", "classification")),
            text(builtin.get("samples")),
            text(builtin.get("features")),
            text(builtin.get("classes") or "-"),
            "",
        )
    for own in catalog.get("uploaded") or []:
        table.add_row(
            f"{text(own.get('id'))}\n{text(own.get('name'))}",
            text(own.get("format")),
            text(own.get("task")),
            text(own.get("rows")),
            text(own.get("features")),
            text(own.get("classes") or "-"),
            f"{(own.get('size_bytes') or 0) / 1e6:.1f} MB",
        )
    return table


def dataset_view(dataset: dict) -> Group:
    schema = dataset.get("schema") or {}
    features = schema.get("features") or []
    lines = [
        f"dataset [bold]{text(dataset.get('id'))}[/]  {text(dataset.get('name'))}  "
        f"({text(dataset.get('format'))}, {(dataset.get('size_bytes') or 0) / 1e6:.1f} MB, "
        f"sha256 {text(str(dataset.get('sha256'))[:12])}…)",
        f"{text(schema.get('rows'))} rows, {len(features)} features, target "
        f"{text(schema.get('target'))!r}: {text(schema.get('task'))}",
    ]
    if schema.get("class_names"):
        counts = zip(schema["class_names"], schema.get("class_counts") or [], strict=False)
        lines.append("classes: " + ", ".join(f"{text(n)} ({c})" for n, c in counts))
    for column, values in (schema.get("categories") or {}).items():
        lines.append(
            f"categorical {text(column)!r}: codes 0..{len(values) - 1} = "
            + ", ".join(text(v) for v in values[:10])
            + (" …" if len(values) > 10 else "")
        )
    if schema.get("input_shape"):
        lines.append(f"images of {'x'.join(str(d) for d in schema['input_shape'])}")
    statistics = Table(title="statistics")
    for column in ("column", "mean", "std", "min", "max"):
        statistics.add_column(column)
    for stat in (schema.get("statistics") or [])[:20]:
        statistics.add_row(
            text(stat.get("name")),
            *(f"{stat.get(k, 0):.4g}" for k in ("mean", "std", "min", "max")),
        )
    preview = Table(title="first rows")
    rows = schema.get("preview") or []
    shown = list(rows[0])[:10] if rows else []
    for column in shown:
        preview.add_column(text(column))
    for row in rows:
        preview.add_row(*(text(row.get(column)) for column in shown))
    return Group(*lines, statistics, preview)
