from pydantic import AliasChoices, Field

from shared.settings import SERVICE_PORTS, ServiceSettings


class TrainerSettings(ServiceSettings):
    port: int = Field(
        default=SERVICE_PORTS["trainer"], validation_alias=AliasChoices("NEXUS_TRAINER_PORT")
    )
    collective_timeout_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="how long a job's processes wait at the rendezvous and in any collective "
        "before the job fails: a lost rank ends the job this fast",
    )
    training_task_deadline_s: float = Field(
        default=24 * 3600.0,
        gt=0,
        le=7 * 24 * 3600,
        description="the longest a node runs a train task whose spec sets no "
        "training.deadline_s; past it the node stops the task itself",
    )
