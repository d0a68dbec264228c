from typing import Literal

from pydantic import AliasChoices, Field

from services.deployer.model_server.schemas import MAX_ROWS
from shared.settings import SERVICE_PORTS, ServiceSettings


class DeployerSettings(ServiceSettings):
    port: int = Field(
        default=SERVICE_PORTS["deployer"], validation_alias=AliasChoices("NEXUS_DEPLOYER_PORT")
    )
    # Model servers this host runs at once (0: what its cores and memory hold), and what one
    # tenant may serve; beyond either, a deployment is refused with 429 (phase 5 fails).
    max_model_servers: int = Field(default=0, ge=0, le=10_000)
    tenant_max_deployments: int = Field(default=10, ge=1)
    # Served models take the first free port from here up (spec.deploy.port overrides).
    model_host: str = "127.0.0.1"
    # The address model servers listen on (default: model_host); in a container 0.0.0.0,
    # so that their published ports and Prometheus reach them.
    model_bind_host: str | None = None
    model_port_start: int = Field(default=8100, ge=1024, le=65535)
    model_port_end: int = Field(default=8999, ge=1024, le=65535)
    model_ready_timeout_s: float = Field(default=60.0, gt=0)
    model_stop_timeout_s: float = Field(default=10.0, gt=0)
    # Test rows sent to a new model server before it counts as deployed (capped at the
    # server's per-request limit); the whole test split of the bundled datasets fits.
    smoke_rows: int = Field(default=MAX_ROWS, ge=1, le=MAX_ROWS)
    # Bring back, at start-up, the model servers that were running when the deployer stopped.
    restore_on_startup: bool = True
    # fork: model servers are forked from a process that has torch and the server imported
    # (a deployment starts in well under a second); exec: each is a new interpreter.
    model_server_start: Literal["fork", "exec"] = "fork"
