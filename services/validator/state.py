"""The validator keeps no process state: its validations run on nodes and live in Postgres."""

from typing import Annotated

from fastapi import Depends

from services.validator.settings import ValidatorSettings
from shared.service_app import ServiceContext, get_context

ValidatorContext = ServiceContext[ValidatorSettings, None]
ValidatorContextDep = Annotated[ValidatorContext, Depends(get_context)]
