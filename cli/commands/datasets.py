"""`nexus dataset upload|list|show|delete`: a tenant's own data, for workflows to train on."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.commands.account import client
from cli.output import console, friendly_errors
from cli.render import dataset_view, datasets_table

app = typer.Typer(help="Upload and manage your datasets.", no_args_is_help=True)


@app.command("upload")
@friendly_errors
def upload(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV, Parquet or NPZ."),
    name: str | None = typer.Option(None, help="Default: the file's name."),
    target: str | None = typer.Option(None, help="The column to predict."),
    task: str | None = typer.Option(None, help="classification or regression."),
    features: str | None = typer.Option(None, help="Comma-separated feature columns."),
    categorical: str | None = typer.Option(None, help="Comma-separated categorical columns."),
    delimiter: str | None = typer.Option(None, help="CSV field separator (default ',')."),
) -> None:
    """Upload a file; print its id and the schema the trainer inferred."""
    given = {
        "name": name,
        "target": target,
        "task": task,
        "features": features,
        "categorical": categorical,
        "delimiter": delimiter,
    }
    with client() as api:
        dataset = api.upload_dataset(file, {k: v for k, v in given.items() if v is not None})
    console.print(dataset_view(dataset))
    console.print(f"train on it with  [bold]dataset: {dataset['id']}[/]  in a workflow spec")


@app.command("list")
@friendly_errors
def list_datasets() -> None:
    """The built-in datasets and your own."""
    with client() as api:
        console.print(datasets_table(api.datasets()))


@app.command("show")
@friendly_errors
def show(
    dataset_id: str = typer.Argument(..., help="Dataset id."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON instead."),
) -> None:
    """One of your datasets: schema, statistics and its first rows."""
    with client() as api:
        dataset = api.dataset(dataset_id)
    if as_json:
        console.print_json(data=dataset)
    else:
        console.print(dataset_view(dataset))


@app.command("delete")
@friendly_errors
def delete(dataset_id: str = typer.Argument(..., help="Dataset id.")) -> None:
    """Delete one of your datasets and its file."""
    with client() as api:
        api.delete_dataset(dataset_id)
    console.print(f"deleted dataset {dataset_id}")
