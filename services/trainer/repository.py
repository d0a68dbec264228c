"""All SQL of the trainer service. Domain code flushes; the request or handler commits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.trainer.models import (
    FINISHED_STATUSES,
    ArchitectureRecord,
    StoredDataset,
    TrainingEpoch,
    TrainingJob,
)
from shared.db import Scope, check_scope, in_scope, locked


def _now() -> datetime:
    return datetime.now(UTC)


class TrainerRepository:
    """Rows of one tenant, or of every tenant for SYSTEM (event handlers, which trust the
    tenant recorded on the row rather than the message).

    A transaction that changes a job or its epochs locks the job's row first (`locked`), so
    concurrent handlers of one job queue on it and never deadlock."""

    def __init__(self, session: AsyncSession, scope: Scope) -> None:
        self._session = session
        self._scope = check_scope(scope)

    def _tenant(self) -> str:
        assert isinstance(self._scope, str), "rows are created for one tenant"
        return self._scope

    # --- architectures ----------------------------------------------------------------------
    async def save_architecture(
        self,
        workflow_id: uuid.UUID,
        dataset: str,
        architecture: dict[str, Any],
        parameter_count: int,
        source: str,
    ) -> None:
        values = {
            "dataset": dataset,
            "architecture": architecture,
            "parameter_count": parameter_count,
            "source": source,
            "created_at": _now(),
        }
        # One architecture per workflow: a re-sent nodes-ready event redesigns it in place.
        await self._session.execute(
            pg_insert(ArchitectureRecord)
            .values(id=uuid.uuid4(), workflow_id=workflow_id, tenant_id=self._tenant(), **values)
            .on_conflict_do_update(index_elements=["workflow_id"], set_=values)
        )

    # --- jobs -------------------------------------------------------------------------------
    async def create_job(
        self,
        job_id: uuid.UUID,
        workflow_id: uuid.UUID,
        cluster_id: uuid.UUID,
        node_id: str | None,
        config: dict[str, Any],
    ) -> TrainingJob:
        job = TrainingJob(
            id=job_id,
            workflow_id=workflow_id,
            tenant_id=self._tenant(),
            cluster_id=cluster_id,
            node_id=node_id,
            status="queued",
            config=config,
            checkpoints=[],
            created_at=_now(),
        )
        self._session.add(job)
        await self._session.flush()
        return job

    async def get_job(self, job_id: uuid.UUID, *, for_update: bool = False) -> TrainingJob | None:
        stmt = select(TrainingJob).where(
            TrainingJob.id == job_id, in_scope(TrainingJob.tenant_id, self._scope)
        )
        if for_update:
            stmt = locked(stmt)
        job: TrainingJob | None = await self._session.scalar(stmt)
        return job

    async def unfinished_jobs_on(self, cluster_id: uuid.UUID) -> list[TrainingJob]:
        """The cluster's jobs not finished yet, locked."""
        return await self._unfinished(TrainingJob.cluster_id == cluster_id)

    async def unfinished_jobs_of(self, workflow_id: uuid.UUID) -> list[TrainingJob]:
        """The workflow's jobs not finished yet, locked."""
        return await self._unfinished(TrainingJob.workflow_id == workflow_id)

    async def _unfinished(self, where: ColumnElement[bool]) -> list[TrainingJob]:
        stmt = locked(
            select(TrainingJob)
            .where(
                where,
                in_scope(TrainingJob.tenant_id, self._scope),
                TrainingJob.status.not_in(FINISHED_STATUSES),
            )
            .order_by(TrainingJob.id)
        )
        return list(await self._session.scalars(stmt))

    async def list_jobs(
        self, workflow_id: uuid.UUID | None, status: str | None, limit: int
    ) -> list[TrainingJob]:
        stmt = select(TrainingJob).where(in_scope(TrainingJob.tenant_id, self._scope))
        if workflow_id is not None:
            stmt = stmt.where(TrainingJob.workflow_id == workflow_id)
        if status is not None:
            stmt = stmt.where(TrainingJob.status == status)
        stmt = stmt.order_by(TrainingJob.created_at.desc()).limit(limit)
        return list(await self._session.scalars(stmt))

    async def mark_started(self, job_id: uuid.UUID) -> None:
        # Conditional: a fast job's finished event may already have been handled.
        await self._session.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job_id, TrainingJob.status == "queued")
            .values(status="running", started_at=_now())
        )

    async def mark_dispatch_failed(self, job_id: uuid.UUID, error: str) -> None:
        await self._session.execute(
            update(TrainingJob)
            .where(TrainingJob.id == job_id, TrainingJob.status == "queued")
            .values(status="failed", error=error, finished_at=_now())
        )

    async def finish_job(
        self,
        job: TrainingJob,
        status: str,
        *,
        metrics: dict[str, Any] | None = None,
        model_uri: str | None = None,
        checkpoints: list[str] | None = None,
        error: str | None = None,
    ) -> None:
        job.status = status
        job.finished_at = _now()
        job.error = error
        if metrics is not None:
            job.metrics = metrics
        if model_uri is not None:
            job.model_uri = model_uri
        if checkpoints is not None:
            job.checkpoints = checkpoints
        await self._session.flush()

    # --- epochs -----------------------------------------------------------------------------
    async def record_epochs(self, job_id: uuid.UUID, epochs: list[dict[str, Any]]) -> None:
        """Store epoch rows; an epoch already stored (a redelivery) is kept as it was."""
        if not epochs:
            return
        now = _now()
        await self._session.execute(
            pg_insert(TrainingEpoch)
            .values(
                [{"job_id": job_id, "epoch": m["epoch"], "metrics": m, "at": now} for m in epochs]
            )
            .on_conflict_do_nothing(index_elements=["job_id", "epoch"])
        )

    async def last_epoch(self, job_id: uuid.UUID) -> int | None:
        """The newest epoch the job has reported."""
        stmt = select(func.max(TrainingEpoch.epoch)).where(TrainingEpoch.job_id == job_id)
        found: int | None = await self._session.scalar(stmt)
        return found

    async def epochs(self, job_id: uuid.UUID) -> list[TrainingEpoch]:
        result = await self._session.scalars(
            select(TrainingEpoch)
            .where(TrainingEpoch.job_id == job_id)
            .order_by(TrainingEpoch.epoch)
        )
        return list(result)

    # --- datasets ---------------------------------------------------------------------------
    async def add_dataset(self, dataset: StoredDataset) -> StoredDataset:
        dataset.tenant_id = self._tenant()
        dataset.created_at = _now()
        self._session.add(dataset)
        await self._session.flush()
        return dataset

    async def list_datasets(self, limit: int) -> list[StoredDataset]:
        stmt = (
            select(StoredDataset)
            .where(in_scope(StoredDataset.tenant_id, self._scope))
            .order_by(StoredDataset.created_at.desc())
            .limit(limit)
        )
        return list(await self._session.scalars(stmt))

    async def get_dataset(self, dataset_id: uuid.UUID) -> StoredDataset | None:
        stmt = select(StoredDataset).where(
            StoredDataset.id == dataset_id, in_scope(StoredDataset.tenant_id, self._scope)
        )
        dataset: StoredDataset | None = await self._session.scalar(stmt)
        return dataset

    async def dataset_bytes(self) -> int:
        """What the tenant's stored dataset files take, for its quota."""
        stmt = select(func.coalesce(func.sum(StoredDataset.size_bytes), 0)).where(
            in_scope(StoredDataset.tenant_id, self._scope)
        )
        return int(await self._session.scalar(stmt) or 0)

    async def unfinished_jobs_training_on(self, location: str) -> int:
        stmt = select(func.count()).where(
            in_scope(TrainingJob.tenant_id, self._scope),
            TrainingJob.status.not_in(FINISHED_STATUSES),
            TrainingJob.config["spec"]["dataset"].as_string() == location,
        )
        return int(await self._session.scalar(stmt) or 0)

    async def delete_dataset(self, dataset: StoredDataset) -> None:
        await self._session.delete(dataset)
        await self._session.flush()
