from pydantic import AliasChoices, Field

from shared.settings import SERVICE_PORTS, ServiceSettings


class MemorySettings(ServiceSettings):
    port: int = Field(
        default=SERVICE_PORTS["memory"], validation_alias=AliasChoices("NEXUS_MEMORY_PORT")
    )
    max_value_bytes: int = 1024 * 1024
