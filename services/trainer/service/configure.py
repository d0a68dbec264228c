"""Phase 2 (configure), whose owner the trainer is: gate the cluster that came up, design
the network (or check the user's), write architecture.json and train.py, and complete the
phase. Phase 2's completion is phase 3's trigger."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from services.trainer.repository import TrainerRepository
from services.trainer.service.design import cluster_gate, design_network
from services.trainer.service.project_files import write_design_files
from shared.artifacts import ArtifactStore
from shared.contracts import ClusterStarted, MemoryWritten, Phase2Completed
from shared.db import UnitOfWork
from shared.phases import PhaseError
from shared.project_layout import MemoryKey, ProjectFile
from shared.telemetry import step


async def configure_workflow(
    artifacts: ArtifactStore, uow: UnitOfWork, event: ClusterStarted
) -> None:
    spec = event.spec
    gates, failures = cluster_gate(spec, event)
    if failures:
        raise PhaseError("; ".join(failures), {"failed_gates": failures, "gates": gates})
    try:
        with step("design network", model=spec.model.type):
            design = await asyncio.to_thread(design_network, spec)
    except ValueError as exc:  # DesignRejected, or a dataset this process cannot load
        raise PhaseError(str(exc), {"gates": {**gates, "architecture_valid": False}}) from exc

    tenant, workflow = event.tenant_id, event.workflow_id
    await TrainerRepository(uow.session, tenant).save_architecture(
        workflow, spec.dataset, design.architecture, design.parameter_count, design.source
    )
    with step("write design files"):
        urls = await asyncio.to_thread(
            write_design_files, artifacts, tenant, workflow, spec, design
        )
    await uow.emit(
        MemoryWritten(
            workflow_id=workflow,
            tenant_id=tenant,
            keys={
                MemoryKey.ARCHITECTURE: {
                    "architecture": design.architecture,
                    "parameter_count": design.parameter_count,
                    "source": design.source,
                    "dataset": design.dataset,
                    "summary": design.summary(),
                    "rationale": design.rationale,
                    "uri": urls[ProjectFile.ARCHITECTURE_CONFIG],
                },
                MemoryKey.TRAINING_SCRIPT: {
                    "uri": urls[ProjectFile.TRAIN_SCRIPT],
                    "summary": (
                        f"python train.py [--epochs N] retrains {design.summary()} from "
                        "../configs/{training,architecture,dataset}.json and writes "
                        "../models/model.safetensors and model-metadata.json"
                    ),
                },
                MemoryKey.PHASE2_COMPLETE: {
                    "completed_at": datetime.now(UTC).isoformat(),
                    "cluster_id": str(event.cluster_id),
                    "gates": gates,
                },
            },
        )
    )
    await uow.emit(
        Phase2Completed(
            workflow_id=workflow,
            tenant_id=tenant,
            cluster_id=event.cluster_id,
            nodes=event.nodes,
            architecture=design.architecture,
            spec=spec,
            gates=gates,
            rendezvous=(event.topology or {}).get("rendezvous"),
        )
    )
