"""Phase 2: the network for a workflow's data, and the gate on the cluster it will train on."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.contracts import ClusterStarted, NodeInfo
from shared.spec import WorkflowSpec


class DesignRejected(ValueError):
    """The requested network cannot be built for this dataset."""


@dataclass(frozen=True)
class NetworkDesign:
    dataset: dict[str, Any]  # describe_dataset(): name, samples, features, classes, class_names
    architecture: dict[str, Any]
    parameter_count: int
    source: str  # "designed" (default funnel) or "user" (the spec's hidden_layers)

    def summary(self) -> str:
        a = self.architecture
        widths = " -> ".join(
            str(w) for w in [a["input_dim"], *a["hidden_layers"], a["num_classes"]]
        )
        return (
            f"MLP {widths} ({a['activation']}, dropout {a['dropout']}), "
            f"{self.parameter_count} parameters, {self.source} for {self.dataset['name']}"
        )


def design_network(spec: WorkflowSpec) -> NetworkDesign:
    """Design (or check the user's) MLP for the spec's dataset.

    Blocking: it loads the dataset with scikit-learn on first use, so call it in a thread.
    """
    from shared.ml.architecture import design_architecture
    from shared.ml.data import describe_dataset

    dataset = describe_dataset(spec.dataset)
    try:
        architecture = design_architecture(
            dataset["features"],
            dataset["classes"],
            hidden_layers=spec.model.hidden_layers,
            activation=spec.model.activation,
            dropout=spec.model.dropout,
        )
    except ValidationError as exc:
        raise DesignRejected(f"invalid architecture: {exc.errors()[0]['msg']}") from exc
    return NetworkDesign(
        dataset=dataset,
        architecture=architecture.to_dict(),
        parameter_count=architecture.parameter_count,
        source="user" if spec.model.hidden_layers is not None else "designed",
    )


def cluster_gate(spec: WorkflowSpec, started: ClusterStarted) -> tuple[dict[str, Any], list[str]]:
    """Phase 2's gate on the cluster, the one place it is checked: it came up with its
    topology connected, with the nodes the gates ask for and a worker among them. Returns
    what was measured and every failure (the network's half is `design_network`)."""
    roles = Counter(node.role for node in started.nodes)
    connected = started.error is None and bool(started.topology and started.topology["connected"])
    gates = {
        "architecture_valid": True,
        "nodes": len(started.nodes),
        "min_nodes": spec.gates.min_nodes,
        "topology": "connected" if connected else "not connected",
        "cluster_id": str(started.cluster_id),
        "strategy": spec.training.strategy,
    }
    failures = []
    if not connected:
        failures.append(started.error or "the cluster's topology is not connected")
    if len(started.nodes) < spec.gates.min_nodes:
        failures.append(
            f"{len(started.nodes)} nodes ready; the gate requires {spec.gates.min_nodes}"
        )
    if roles["worker"] < 1:
        failures.append("no worker node to train on")
    strategy = spec.training.strategy
    if strategy == "parameter_server" and roles["parameter_server"] < 1:
        failures.append("no parameter-server node for strategy parameter_server")
    if strategy != "single" and connected and not (started.topology or {}).get("rendezvous"):
        failures.append(f"the cluster elected no rendezvous for strategy {strategy}")
    return gates, failures


def job_members(spec: WorkflowSpec, nodes: list[NodeInfo]) -> tuple[list[NodeInfo], int]:
    """The nodes of the training job in rank order, and how many of them (the first) are
    parameter servers: worker rank 0 alone for `single`, every worker for `ddp`, every
    parameter server and then every worker for `parameter_server`."""
    workers = sorted((n for n in nodes if n.role == "worker"), key=lambda n: n.rank)
    strategy = spec.training.strategy
    if strategy == "single":
        return workers[:1], 0
    if strategy == "ddp":
        return workers, 0
    servers = sorted((n for n in nodes if n.role == "parameter_server"), key=lambda n: n.rank)
    return [*servers, *workers], len(servers)
