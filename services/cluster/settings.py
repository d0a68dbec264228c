from pydantic import AliasChoices, Field

from shared.settings import SERVICE_PORTS, ServiceSettings


class ClusterSettings(ServiceSettings):
    port: int = Field(
        default=SERVICE_PORTS["cluster"], validation_alias=AliasChoices("NEXUS_CLUSTER_PORT")
    )
    # Every node of a cluster must register within this long, or phase 2 fails.
    node_registration_timeout_s: float = Field(default=60.0, gt=0)
    # Budget of the gloo rendezvous + all_reduce that proves the topology is connected
    # (it includes each node's first `import torch`).
    topology_timeout_s: float = Field(default=60.0, gt=0)
    # SIGTERM, then SIGKILL after this long.
    node_stop_grace_s: float = Field(default=5.0, gt=0)
    # A phase1.completed older than this (the service was down) fails phase 2 instead of
    # starting nodes for a request nobody is waiting on any more.
    node_start_max_age_s: float = Field(default=600.0, gt=0)
    # Address the nodes report and rendezvous on; nodes run on this host.
    node_host: str = "127.0.0.1"
