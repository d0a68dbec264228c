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
    dataset_max_bytes: int = Field(
        default=2 * 1024**3,
        gt=0,
        description="the largest dataset file one upload or import may store",
    )
    tenant_dataset_quota_bytes: int = Field(
        default=10 * 1024**3,
        gt=0,
        description="the bytes of dataset files one tenant may keep stored at once",
    )
    dataset_url_prefixes: list[str] = Field(
        default_factory=list,
        description="URL prefixes datasets may be imported from (e.g. s3://team-data/, "
        "file:///srv/datasets/); none by default, so the service reads no path a tenant names",
    )
