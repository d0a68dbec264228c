"""Phase 2: the network for a workflow's data, and the gate on the cluster it will train on."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.contracts import ClusterStarted, NodeInfo
from shared.spec import WorkflowSpec


class DesignRejected(ValueError):
    """The requested network cannot be built for this dataset."""


@dataclass(frozen=True)
class NetworkDesign:
    # describe_dataset(): name, task, samples, features, classes, class_names
    dataset: dict[str, Any]
    architecture: dict[str, Any]
    parameter_count: int
    source: str  # "designed" (default funnel, or model: auto) or "user" (the spec's network)
    rationale: list[str] = field(default_factory=list)  # why, for a designed network

    def summary(self) -> str:
        from shared.ml.architecture import Architecture

        described = Architecture.model_validate(self.architecture).describe()
        return (
            f"{described}, {self.parameter_count} parameters, {self.source} for "
            f"{self.dataset['name']}"
        )


def design_network(spec: WorkflowSpec) -> NetworkDesign:
    """Design (or check the user's) network for the spec's dataset: an MLP, the spec's layers,
    or under `model: auto` one designed from the data (shared/auto_design.py).

    Blocking: it loads the dataset with scikit-learn on first use, so call it in a thread.
    """
    from shared.auto_design import auto_layers, auto_training
    from shared.layer_spec import input_shape_for
    from shared.ml.architecture import Architecture, design_architecture
    from shared.ml.data import describe_dataset

    dataset = describe_dataset(spec.dataset)
    model = spec.model
    rationale: list[str] = []
    try:
        layers = model.layers
        if model.type == "auto":
            shape = input_shape_for(dataset["features"], model.input_shape)
            categorical = [(int(i), int(n)) for i, n in dataset.get("categorical", [])]
            layers, rationale = auto_layers(shape, categorical)
            workers = 1 if spec.training.strategy == "single" else spec.cluster.workers
            every = set(type(spec.training).model_fields)
            rules, reasons = auto_training(dataset["samples"], workers, every)
            for (name, value), reason in zip(rules.items(), reasons, strict=True):
                actual = getattr(spec.training, name)
                rationale.append(reason if actual == value else f"training.{name} {actual}: set")
        if layers is not None:
            architecture = Architecture(
                input_dim=dataset["features"],
                task=dataset["task"],
                num_classes=dataset["classes"] or None,  # 0: a regression target
                layers=layers,
                input_shape=model.input_shape,
            )
        else:
            architecture = design_architecture(
                dataset["features"],
                dataset["classes"],
                hidden_layers=model.hidden_layers,
                activation=model.activation,
                dropout=model.dropout,
            )
    except ValidationError as exc:
        raise DesignRejected(f"invalid architecture: {exc.errors()[0]['msg']}") from exc
    user_given = model.type == "layers" or model.hidden_layers is not None
    return NetworkDesign(
        dataset=dataset,
        architecture=architecture.to_dict(),
        parameter_count=architecture.parameter_count,
        source="user" if user_given else "designed",
        rationale=rationale,
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
