from pydantic import AliasChoices, Field

from shared.settings import SERVICE_PORTS, ServiceSettings


class TrainerSettings(ServiceSettings):
    port: int = Field(
        default=SERVICE_PORTS["trainer"], validation_alias=AliasChoices("NEXUS_TRAINER_PORT")
    )
    # How long a node has to accept (not finish) a task before the dispatch counts as failed.
    task_request_timeout_s: float = Field(default=10.0, gt=0, le=120)
