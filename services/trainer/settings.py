from pydantic import AliasChoices, Field

from shared.settings import SERVICE_PORTS, ServiceSettings


class TrainerSettings(ServiceSettings):
    port: int = Field(
        default=SERVICE_PORTS["trainer"], validation_alias=AliasChoices("NEXUS_TRAINER_PORT")
    )
