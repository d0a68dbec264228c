"""The `nexus` command. Commands live in cli/commands/; this module only wires them up."""

from __future__ import annotations

import typer

from cli.commands import account, datasets, demo, secrets, stack, workflows

app = typer.Typer(
    name="nexus",
    help="Train, validate and deploy neural networks on a local Nexus stack.",
    no_args_is_help=True,
    add_completion=False,
)
workflow_app = typer.Typer(help="Inspect workflows.", no_args_is_help=True)

app.command()(stack.up)
app.command()(stack.down)
app.command("restart")(stack.restart_component)
app.command()(stack.status)
app.command()(account.register)
app.command()(account.login)
app.command()(workflows.run)
app.command()(workflows.report)
app.command()(workflows.predict)
app.command()(demo.demo)
workflow_app.command("show")(workflows.workflow_show)
workflow_app.command("follow")(workflows.workflow_follow)
workflow_app.command("retry")(workflows.workflow_retry)
app.add_typer(workflow_app, name="workflow")
app.add_typer(secrets.app, name="secrets")
app.add_typer(datasets.app, name="dataset")

if __name__ == "__main__":
    app()
