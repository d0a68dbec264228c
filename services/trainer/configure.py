"""Phase 2, the trainer's half: design the network once the cluster's nodes are ready."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pydantic import ValidationError

from services.trainer.design import design_network, phase2_gate_failures
from services.trainer.phase_runner import PhaseError, run_phase_step
from services.trainer.project_files import write_design_files
from services.trainer.repository import TrainerRepository
from shared.db import UnitOfWork
from shared.errors import describe_validation_errors
from shared.events import ClusterNodesReady, Phase2Completed
from shared.service_app import ServiceContext
from shared.spec import WorkflowSpec

CONSUMER = "trainer-design"


def parse_spec(raw: dict[str, object]) -> WorkflowSpec:
    try:
        return WorkflowSpec.model_validate(raw)
    except ValidationError as exc:
        errors = describe_validation_errors([dict(e) for e in exc.errors()])
        raise PhaseError("the workflow spec is invalid", {"errors": errors}) from exc


async def on_nodes_ready(context: ServiceContext, event: ClusterNodesReady) -> None:
    async def step(uow: UnitOfWork) -> None:
        await configure_workflow(context, uow, event)

    await run_phase_step(context, event, CONSUMER, 2, step)


async def configure_workflow(
    context: ServiceContext, uow: UnitOfWork, event: ClusterNodesReady
) -> None:
    spec = parse_spec(event.spec)
    try:
        design = await asyncio.to_thread(design_network, spec)
    except ValueError as exc:  # DesignRejected, or a dataset this process cannot load
        raise PhaseError(str(exc)) from exc
    failures = phase2_gate_failures(spec, event.nodes, design)
    if failures:
        raise PhaseError("; ".join(failures), {"failed_gates": failures})

    tenant, workflow = event.tenant_id, event.workflow_id
    await TrainerRepository(uow.session, tenant).save_architecture(
        workflow, tenant, spec.dataset, design.architecture, design.parameter_count, design.source
    )
    urls = await asyncio.to_thread(
        write_design_files, context.artifacts, tenant, workflow, spec, design
    )
    architecture_url = urls["neural/configs/architecture.json"]
    script_url = urls["neural/scripts/train.py"]
    gates = {
        "architecture_valid": True,
        "nodes": len(event.nodes),
        "min_nodes": spec.gates.min_nodes,
        "strategy": spec.training.strategy,
    }
    await context.memory.put_many(
        tenant,
        str(workflow),
        {
            "neural/architecture": {
                "architecture": design.architecture,
                "parameter_count": design.parameter_count,
                "source": design.source,
                "dataset": design.dataset,
                "summary": design.summary(),
                "uri": architecture_url,
            },
            "neural/training-script": {
                "uri": script_url,
                "summary": (
                    f"python train.py [--epochs N] retrains {design.summary()} from "
                    "../configs/{training,architecture,dataset}.json and writes "
                    "../models/model.safetensors and model-metadata.json"
                ),
            },
            "neural/phase2-complete": {
                "completed_at": datetime.now(UTC).isoformat(),
                "cluster_id": str(event.cluster_id),
                "gates": gates,
            },
        },
    )
    await uow.emit(
        Phase2Completed(
            workflow_id=workflow,
            tenant_id=tenant,
            cluster_id=event.cluster_id,
            nodes=event.nodes,
            architecture=design.architecture,
            spec=spec.model_dump(mode="json"),
        )
    )
