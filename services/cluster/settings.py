from typing import Literal

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
    # Deadlines (service/deadlines.py): a phase still running past its deadline fails.
    # Any phase but training may take this long; training gets it as a margin on its estimate.
    phase_deadline_s: float = Field(default=120.0, gt=0, le=86400)
    # Training's budget until it reports its first epoch (start-up plus one epoch).
    training_first_epoch_deadline_s: float = Field(default=600.0, gt=0, le=604800)
    # How much slower than its last epoch the remaining epochs may run.
    training_deadline_factor: float = Field(default=3.0, ge=1.0, le=100.0)
    # Admission (service/admission.py). The node processes this host runs at once; 0: what
    # its cores and memory hold. Beyond it, clusters wait in a queue.
    max_node_processes: int = Field(default=0, ge=0, le=100_000)
    # What one tenant may hold at once; beyond a quota a request gets 429.
    tenant_max_workflows: int = Field(default=10, ge=1)
    tenant_max_clusters: int = Field(default=10, ge=1)
    tenant_max_nodes: int = Field(default=40, ge=1)
    # Per-tenant overrides, as JSON: {"tenant-id": {"workflows": 2, "clusters": 4, "nodes": 16}}.
    tenant_quotas: dict[str, dict[Literal["workflows", "clusters", "nodes"], int]] = Field(
        default_factory=dict
    )
    # Lost nodes of a ready cluster replaced by new processes, at most this many per cluster.
    node_replacements: int = Field(default=4, ge=0, le=100)
    # Address the nodes report and rendezvous on; nodes run on this host.
    node_host: str = "127.0.0.1"
    # fork: nodes are forked from a process that has torch imported (milliseconds each, and
    # torch's pages shared); exec: each node is a new interpreter (seconds each).
    node_start: Literal["fork", "exec"] = "fork"
