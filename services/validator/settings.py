from pydantic import AliasChoices, Field

from shared.settings import SERVICE_PORTS, ServiceSettings


class ValidatorSettings(ServiceSettings):
    port: int = Field(
        default=SERVICE_PORTS["validator"], validation_alias=AliasChoices("NEXUS_VALIDATOR_PORT")
    )
    # Chunks the test set is split into for the sharded-inference consistency check.
    inference_shards: int = Field(default=4, ge=2, le=64)
    # Timed single-row forward passes behind the latency percentiles.
    latency_repeats: int = Field(default=200, ge=20, le=100_000)
    # The longest a node runs a validate task before it stops it itself: a backstop, later
    # than phase 4's own deadline (NEXUS_PHASE_DEADLINE_S, 120 s), which the cluster enforces.
    validation_task_deadline_s: float = Field(default=150.0, gt=0, le=24 * 3600)
