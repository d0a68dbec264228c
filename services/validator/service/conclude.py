"""Phase 4, end: judge the node's measurements against the gates, write the report and
validation.py, and complete or fail the phase (with its memory keys)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from services.validator.models import OPEN_STATUSES, Validation
from services.validator.repository import ValidationRepository
from services.validator.service import report
from services.validator.service.gates import (
    GateOutcome,
    apply_gates,
    failed_gate_names,
    failure_reason,
    phase4_gates,
)
from services.validator.service.validate import fail_validation
from services.validator.state import ValidatorContext
from shared.artifacts import ArtifactStore
from shared.contracts import MemoryWritten, Phase4Passed, ValidationFinished, ValidationResult
from shared.db import SYSTEM, UnitOfWork
from shared.project_layout import MemoryKey, ProjectFile, manual_report_path
from shared.spec import WorkflowSpec

logger = logging.getLogger(__name__)


async def conclude(context: ValidatorContext, uow: UnitOfWork, event: ValidationFinished) -> None:
    validation = await ValidationRepository(uow.session, SYSTEM).get(
        event.validation_id, for_update=True
    )
    if validation is None or validation.tenant_id != event.tenant_id:
        logger.warning("ignoring a result for unknown validation %s", event.validation_id)
        return
    if validation.status not in OPEN_STATUSES:
        logger.warning("validation %s is already %s", validation.id, validation.status)
        return
    repository = ValidationRepository(uow.session, validation.tenant_id)
    validation.node_id = event.node_id
    result = event.result
    if not event.succeeded or result is None:
        error = event.error or "the validator node reported success without a result"
        await repository.finish(validation, "error", error=error)
        if validation.trigger == "phase":
            reason = f"validation failed on node {event.node_id}: {error}"
            await fail_validation(uow, validation, reason)
        return
    finished_at = datetime.now(UTC)
    outcomes = apply_gates(validation.gates, result)
    measured = result.model_dump(mode="json")
    files = render_project_files(validation, measured, outcomes, finished_at)
    passed = not failed_gate_names(outcomes)
    results = {
        **measured,
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
    await uow.emit(memory_keys(context, validation, result, results, report_uri, finished_at))
    if passed:
        await uow.emit(
            Phase4Passed(
                workflow_id=validation.workflow_id,
                tenant_id=validation.tenant_id,
                validation_id=validation.id,
                model_uri=validation.model_uri,
                metrics=result.headline_metrics(),
                spec=WorkflowSpec.model_validate(validation.spec),
            )
        )
    else:
        await fail_validation(uow, validation, failure_reason(outcomes), results)


def _report_path(validation: Validation) -> str:
    if validation.trigger == "phase":
        return ProjectFile.REPORT
    return manual_report_path(validation.id)


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
        task = result.get("task", "classification")
        config = report.validation_config(result, phase4_gates(validation.gates, task))
        files[ProjectFile.VALIDATION_CONFIG] = report.dumps_config(config)
        files[ProjectFile.VALIDATION_SCRIPT] = report.render_validation_script(
            validation.workflow_id, validation.id, at
        )
    return files


def _write_all(artifacts: ArtifactStore, urls: dict[str, str], files: dict[str, str]) -> None:
    for path, text in files.items():
        artifacts.write_text(urls[path], text)


def memory_keys(
    context: ValidatorContext,
    validation: Validation,
    result: ValidationResult,
    results: dict[str, Any],
    report_uri: str,
    at: datetime,
) -> MemoryWritten:
    latency = result.latency
    passed = results["passed"]
    if result.task == "regression":
        score = f"test R² {result.test.r2:.4f}, RMSE {result.test.rmse:.4g}"
        gap = f"train/val R² gap {result.train_val_r2_gap:+.4f}"
    else:
        score = f"test accuracy {result.test.accuracy:.4f}"
        gap = f"train/val gap {result.train_val_gap:+.4f}"
    summary = f"{'PASSED' if passed else 'FAILED'}: {score}, p99 {latency.p99_ms:.3f} ms, {gap}"
    keys: dict[str, Any] = {
        MemoryKey.VALIDATION: {
            "validation_id": str(validation.id),
            "status": validation.status,
            "passed": passed,
            "model_uri": validation.model_uri,
            "node_id": validation.node_id,
            "gates": results["gates"],
            "failed_gates": results["failed_gates"],
            "test_suite": results["test_suite"],
            "finished_at": at.isoformat(),
        },
        MemoryKey.BENCHMARK_RESULTS: {
            "latency_ms": latency.model_dump(include={"p50_ms", "p95_ms", "p99_ms", "mean_ms"}),
            "latency_repeats": latency.repeats,
            "throughput": result.throughput.model_dump(),
            "distributed_inference": result.distributed_inference,
            "node_id": validation.node_id,
            "torch_version": result.torch_version,
        },
        MemoryKey.REPORT: {
            "uri": report_uri,
            "validation_script": context.artifacts.workflow_url(
                validation.tenant_id, validation.workflow_id, ProjectFile.VALIDATION_SCRIPT
            ),
            "summary": summary,
        },
    }
    if passed:
        keys[MemoryKey.PHASE4_COMPLETE] = {
            "complete": True,
            "validation_id": str(validation.id),
            "completed_at": at.isoformat(),
        }
    return MemoryWritten(
        workflow_id=validation.workflow_id, tenant_id=validation.tenant_id, keys=keys
    )
