"""Concluding a validation from the node's report: gates, project files, memory keys and
the phase 4 outcome event."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from services.validator import report
from services.validator.gates import (
    GateOutcome,
    apply_gates,
    failed_gate_names,
    failure_reason,
    phase4_gates,
)
from services.validator.models import OPEN_STATUSES, Validation
from services.validator.repository import ValidationRepository
from services.validator.service import phase_failed
from shared.artifacts import ArtifactStore
from shared.db import UnitOfWork
from shared.events import Phase4Passed, ValidationFinished
from shared.service_app import ServiceContext

logger = logging.getLogger(__name__)


async def conclude(context: ServiceContext, uow: UnitOfWork, event: ValidationFinished) -> None:
    repository = ValidationRepository(uow.session, None)
    validation = await repository.get(event.validation_id, for_update=True)
    if validation is None or validation.tenant_id != event.tenant_id:
        logger.warning("ignoring a result for unknown validation %s", event.validation_id)
        return
    if validation.status not in OPEN_STATUSES:
        logger.warning("validation %s is already %s", validation.id, validation.status)
        return
    validation.node_id = event.node_id
    if not event.succeeded:
        error = event.error or "the validator node reported a failure without a reason"
        await repository.finish(validation, "error", error=error)
        await _emit_failure(uow, validation, f"validation failed on node {event.node_id}: {error}")
        return
    finished_at = datetime.now(UTC)
    try:
        outcomes = apply_gates(validation.gates, event.result)
        metrics = headline_metrics(event.result)
        files = render_project_files(validation, event.result, outcomes, finished_at)
    except (KeyError, TypeError, ValueError) as exc:
        # A report missing figures cannot be judged; it is the node's error, not the model's.
        error = f"incomplete validation result from node {event.node_id}: {exc!r}"
        await repository.finish(validation, "error", error=error)
        await _emit_failure(uow, validation, error)
        return
    passed = not failed_gate_names(outcomes)
    results = {
        **event.result,
        "passed": passed,
        "gates": [o.to_dict() for o in outcomes],
        "failed_gates": failed_gate_names(outcomes),
    }
    urls = {
        path: context.artifacts.workflow_url(validation.tenant_id, validation.workflow_id, path)
        for path in files
    }
    await asyncio.to_thread(_write_all, context.artifacts, urls, files)
    report_uri = urls[_report_path(validation)]
    status = "passed" if passed else "failed"
    await repository.finish(validation, status, results=results, report_uri=report_uri)
    if validation.trigger != "phase":
        return
    await write_memory(context, validation, results, outcomes, report_uri, finished_at)
    if passed:
        await uow.emit(
            Phase4Passed(
                workflow_id=validation.workflow_id,
                tenant_id=validation.tenant_id,
                validation_id=validation.id,
                model_uri=validation.model_uri,
                metrics=metrics,
                spec=validation.spec,
            )
        )
    else:
        await uow.emit(phase_failed(validation, failure_reason(outcomes), results))


async def _emit_failure(uow: UnitOfWork, validation: Validation, reason: str) -> None:
    if validation.trigger == "phase":
        await uow.emit(phase_failed(validation, reason))


def headline_metrics(result: dict[str, Any]) -> dict[str, Any]:
    latency = result["latency"]
    return {
        "test_accuracy": result["test"]["accuracy"],
        "test_loss": result["test"]["loss"],
        "macro_f1": result["test"]["macro_f1"],
        "train_accuracy": result["train_accuracy"],
        "val_accuracy": result["val_accuracy"],
        "train_val_gap": result["train_val_gap"],
        "p50_latency_ms": latency["p50_ms"],
        "p95_latency_ms": latency["p95_ms"],
        "p99_latency_ms": latency["p99_ms"],
        "throughput_rows_per_second": result["throughput"]["rows_per_second"],
    }


def _report_path(validation: Validation) -> str:
    if validation.trigger == "phase":
        return report.REPORT_PATH
    return report.manual_report_path(validation.id)


def render_project_files(
    validation: Validation,
    result: dict[str, Any],
    outcomes: list[GateOutcome],
    at: datetime,
) -> dict[str, str]:
    """Project-relative path -> text: the report, plus validation.py and its config for
    phase 4's own validation (a manual re-run leaves those as phase 4 wrote them)."""
    files = {
        _report_path(validation): report.render_report(
            workflow_id=validation.workflow_id,
            validation_id=validation.id,
            result=result,
            outcomes=outcomes,
            at=at,
        )
    }
    if validation.trigger == "phase":
        config = report.validation_config(result, phase4_gates(validation.gates))
        files[report.CONFIG_PATH] = report.dumps_config(config)
        files[report.SCRIPT_PATH] = report.render_validation_script(
            validation.workflow_id, validation.id, at
        )
    return files


def _write_all(artifacts: ArtifactStore, urls: dict[str, str], files: dict[str, str]) -> None:
    for path, text in files.items():
        artifacts.write_text(urls[path], text)


async def write_memory(
    context: ServiceContext,
    validation: Validation,
    results: dict[str, Any],
    outcomes: list[GateOutcome],
    report_uri: str,
    at: datetime,
) -> None:
    latency = results["latency"]
    passed = results["passed"]
    summary = (
        f"{'PASSED' if passed else 'FAILED'}: test accuracy {results['test']['accuracy']:.4f}, "
        f"p99 {latency['p99_ms']:.3f} ms, train/val gap {results['train_val_gap']:+.4f}"
    )
    values: dict[str, Any] = {
        "neural/validation": {
            "validation_id": str(validation.id),
            "status": validation.status,
            "passed": passed,
            "model_uri": validation.model_uri,
            "node_id": validation.node_id,
            "gates": [o.to_dict() for o in outcomes],
            "failed_gates": results["failed_gates"],
            "test_suite": results["test_suite"],
            "finished_at": at.isoformat(),
        },
        "neural/benchmark-results": {
            "latency_ms": {k: latency[k] for k in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")},
            "latency_repeats": latency["repeats"],
            "throughput": results["throughput"],
            "distributed_inference": results["distributed_inference"],
            "node_id": validation.node_id,
            "torch_version": results.get("torch_version"),
        },
        "neural/report": {
            "uri": report_uri,
            "validation_script": context.artifacts.workflow_url(
                validation.tenant_id, validation.workflow_id, report.SCRIPT_PATH
            ),
            "summary": summary,
        },
    }
    if passed:
        values["neural/phase4-complete"] = {
            "complete": True,
            "validation_id": str(validation.id),
            "completed_at": at.isoformat(),
        }
    await context.memory.put_many(validation.tenant_id, str(validation.workflow_id), values)
