"""The memory service keeps no process state: every key lives in Postgres."""

from typing import Annotated

from fastapi import Depends

from services.memory.settings import MemorySettings
from shared.service_app import ServiceContext, get_context

MemoryContext = ServiceContext[MemorySettings, None]
MemoryContextDep = Annotated[MemoryContext, Depends(get_context)]
