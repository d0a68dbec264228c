from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

NAMESPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,255}$"


class MemoryPut(BaseModel):
    value: Any = Field(description="Any JSON value.")


class MemoryEntryOut(BaseModel):
    namespace: str
    key: str
    value: Any
    version: int
    created_at: datetime
    updated_at: datetime


class MemoryListOut(BaseModel):
    namespace: str
    entries: list[MemoryEntryOut]


class MemoryChangeOut(BaseModel):
    version: int
    operation: str
    value: Any
    changed_at: datetime
