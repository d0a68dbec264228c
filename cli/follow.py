"""`--follow`: a workflow's changes as they happen (the cluster's Server-Sent Events), drawn
as progress bars for its phases and training epochs, and one readable line per phase."""

from __future__ import annotations

import time
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.client import ApiError, NexusClient, Unreachable
from cli.render import detail_text, styled

TERMINAL = ("completed", "failed")
PHASES = 5
# Following tolerates a service restart or a slow answer this many times in a row.
MAX_CONSECUTIVE_ERRORS = 20


def _phase_line(phase: dict) -> str:
    name = escape(str(phase.get("name")))
    line = f"phase {phase.get('phase')} {name}: {styled(phase.get('status'))}"
    if phase.get("duration_s") is not None:
        line += f" in {phase['duration_s']:.2f} s"
    if phase.get("detail"):
        line += f"  [dim]{escape(detail_text(phase['detail']))}[/]"
    return line


def workflow_states(client: NexusClient, workflow_id: str, interval: float) -> Iterator[dict]:
    """The workflow now, then each change the event stream reports; the stream is opened
    again after a break (a restarting service), and a 4xx ends it."""
    errors = 0
    while True:
        try:
            yield client.workflow(workflow_id)
            for workflow in client.workflow_events(workflow_id):
                errors = 0
                yield workflow
        except (ApiError, Unreachable) as exc:
            # A 4xx (unknown id, no access) will not fix itself; a restarting service may.
            transient = isinstance(exc, Unreachable) or exc.status >= 500
            if not transient or errors >= MAX_CONSECUTIVE_ERRORS:
                raise
            errors += 1
        time.sleep(interval)  # only between attempts to reach the stream again


def _training_text(progress: dict) -> str:
    parts = [f"epoch {progress.get('epoch')}/{progress.get('epochs')}"]
    if progress.get("train_loss") is not None:
        parts.append(f"loss {progress['train_loss']:.4f}")
    if progress.get("val_accuracy") is not None:
        parts.append(f"val_acc {progress['val_accuracy']:.3f}")
    if progress.get("val_r2") is not None:
        parts.append(f"val_r2 {progress['val_r2']:.3f}")
    if progress.get("samples_per_second"):
        workers = progress.get("workers") or 1
        plural = "s" if workers != 1 else ""
        parts.append(f"{progress['samples_per_second']:,.0f} samples/s on {workers} worker{plural}")
    return "training  " + "  ".join(parts)


def follow_workflow(
    client: NexusClient, workflow_id: str, console: Console, interval: float = 0.5
) -> dict:
    """Follow until the workflow completes or fails; return its last state."""
    announced: set[tuple[int, str]] = set()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bars:
        phases_bar = bars.add_task("phases", total=PHASES)
        epochs_bar = bars.add_task("training  waiting", total=None, visible=False)
        for workflow in workflow_states(client, workflow_id, interval):
            phases = workflow.get("phases") or []
            for phase in phases:
                key = (phase.get("phase"), phase.get("status"))
                if phase.get("status") in TERMINAL and key not in announced:
                    announced.add(key)
                    bars.console.print(_phase_line(phase))
            done = sum(1 for phase in phases if phase.get("status") == "completed")
            current = workflow.get("current_phase")
            name = next((p.get("name") for p in phases if p.get("phase") == current), "")
            bars.update(phases_bar, completed=done, description=f"phases    {name}".rstrip())
            progress = workflow.get("progress")
            if progress and progress.get("epochs"):
                bars.update(
                    epochs_bar,
                    visible=True,
                    total=progress["epochs"],
                    completed=progress.get("epoch") or 0,
                    description=_training_text(progress),
                )
            if workflow.get("status") in TERMINAL:
                return workflow
    raise AssertionError("unreachable: workflow_states never ends by itself")
