import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, Index, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import Uuid

from shared.db import add_event_tables

SCHEMA = "validator"


class Base(DeclarativeBase):
    metadata = add_event_tables(MetaData(schema=SCHEMA))


# queued -> running -> passed | failed (gates) | error (the check itself could not run)
VALIDATION_STATUSES = ("queued", "running", "passed", "failed", "error")
OPEN_STATUSES = ("queued", "running")
# A validation's `trigger`: "phase" validations run for phase 4 and advance the workflow;
# "manual" ones are re-runs a tenant asked for through the API and only report.


class Validation(Base):
    """One validation of one trained model: its gates, measured results and report."""

    __tablename__ = "validations"
    __table_args__ = (
        Index("ix_validations_tenant_workflow", "tenant_id", "workflow_id"),
        CheckConstraint(
            "status IN ('queued', 'running', 'passed', 'failed', 'error')",
            name="ck_validations_status",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), nullable=False)
    workflow_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    cluster_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, nullable=True)
    trigger: Mapped[str] = mapped_column(String(16), nullable=False)
    model_uri: Mapped[str] = mapped_column(String(1024), nullable=False)
    node_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    gates: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    results: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    report_uri: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
