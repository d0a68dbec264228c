"""The trainer keeps no process state: its jobs run on nodes and live in Postgres."""

from typing import Annotated

from fastapi import Depends

from services.trainer.settings import TrainerSettings
from shared.service_app import ServiceContext, get_context

TrainerContext = ServiceContext[TrainerSettings, None]
TrainerContextDep = Annotated[TrainerContext, Depends(get_context)]
