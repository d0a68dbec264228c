"""The workflow spec a user submits (YAML through the CLI, JSON over HTTP or in an event).

Every field is validated here, so a bad spec is refused with a 422 naming the field before
anything is stored.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.layer_spec import (
    Activation,
    Layer,
    LayerShapeError,
    check_embeddings,
    infer_shapes,
    input_shape_for,
)
from shared.synthetic import CLASSIFICATION, REGRESSION, Task, is_synthetic, parse_synthetic

# Kept in step with shared.ml.data.BUNDLED_DATASETS (a test checks); duplicated so that
# validating a spec does not import the ML stack into every web process.
BUNDLED_DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")


class DatasetShape(NamedTuple):
    rows: int
    features: int
    classes: int  # 0 for a regression dataset
    task: Task = "classification"
    # An image dataset's layout of one row, (C, H, W): the default model.input_shape.
    input_shape: tuple[int, ...] | None = None
    # (feature index, number of categories) of each categorical column, which the network
    # must embed.
    categorical: tuple[tuple[int, int], ...] = ()

    @property
    def outputs(self) -> int:
        """The network's output width: one logit per class, or the one predicted value."""
        return 1 if self.task == "regression" else self.classes


# Of each bundled dataset, for checking a layer spec's shapes at submission (a test checks).
BUNDLED_SHAPES = {
    "digits": DatasetShape(1797, 64, 10),
    "iris": DatasetShape(150, 4, 3),
    "wine": DatasetShape(178, 13, 3),
    "breast_cancer": DatasetShape(569, 30, 2),
    "diabetes": DatasetShape(442, 10, 0, "regression"),
}
# The shares of a dataset held out for validation and test (seeded by training.seed); the
# trainer, the validator node and the generated scripts all split with these.
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15


# A stored dataset is named by its id or location, or by a URL it is imported from; which
# tenant's it is and what shape it has is known to the trainer, not to the spec.
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)
SHAPE_CONTEXT = "dataset_shape"


def is_stored_dataset(name: str) -> bool:
    """Whether `name` refers to a stored dataset (an id or a URL) rather than a built-in."""
    return bool(_URL.match(name)) or _is_uuid(name)


def _is_uuid(name: str) -> bool:
    try:
        uuid.UUID(name)
    except ValueError:
        return False
    return True


def dataset_shape(name: str, context: Any = None) -> DatasetShape | None:
    """Rows, features, classes and task of a dataset the spec may name (already validated):
    a built-in's from the tables here, a stored one's from the validation context the
    platform gives once it has looked the dataset up (None before)."""
    if is_stored_dataset(name):
        shape = (context or {}).get(SHAPE_CONTEXT) if isinstance(context, dict) else None
        return shape if isinstance(shape, DatasetShape) else None
    if is_synthetic(name):
        synthetic = parse_synthetic(name)
        if synthetic.task == "regression":
            return DatasetShape(synthetic.rows, synthetic.features, 0, "regression")
        return DatasetShape(synthetic.rows, synthetic.features, synthetic.classes)
    return BUNDLED_SHAPES[name]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    type: Literal["mlp", "layers", "auto"] = Field(
        default="mlp",
        description="mlp: hidden_layers (designed when omitted); layers: the network layer by "
        "layer; auto: designed from the data (an MLP for rows, a small CNN for images)",
    )
    hidden_layers: list[int] | None = Field(
        default=None, description="Hidden layer widths; designed from the data when omitted."
    )
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=0.9)
    layers: list[Layer] | None = Field(
        default=None,
        max_length=64,
        description="type layers: the layers before the output layer, which is added",
    )
    input_shape: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        default=None,
        min_length=1,
        max_length=3,
        description="How a row's features are laid out for the first layer, e.g. [1, 8, 8]",
    )

    @model_validator(mode="after")
    def _one_kind_of_network(self) -> ModelSpec:
        if (self.type == "layers") != (self.layers is not None):
            raise ValueError("model.layers is required with type layers, and only with it")
        if self.hidden_layers is not None and self.type != "mlp":
            raise ValueError("model.hidden_layers belongs to type mlp")
        if self.input_shape is not None and self.type == "mlp":
            raise ValueError("model.input_shape belongs to type layers or auto")
        return self

    @field_validator("hidden_layers")
    @classmethod
    def _sane_layers(cls, layers: list[int] | None) -> list[int] | None:
        if layers is None:
            return None
        if not 1 <= len(layers) <= 8:
            raise ValueError("between 1 and 8 hidden layers")
        if any(not 1 <= width <= 4096 for width in layers):
            raise ValueError("each hidden layer width must be between 1 and 4096")
        return layers


class TrainingSpec(_Strict):
    strategy: Literal["ddp", "parameter_server", "single"] = Field(
        default="ddp",
        description="single: one worker; ddp: every worker, gradients all-reduced; "
        "parameter_server: every worker, parameters held by the parameter-server nodes",
    )
    ps_mode: Literal["sync", "async"] = Field(
        default="sync",
        description="parameter_server only. sync: one averaged step from every worker (DDP's "
        "step); async: stale-synchronous, workers at most max_staleness versions apart",
    )
    max_staleness: int = Field(
        default=0, ge=0, le=100, description="ps_mode async: versions a worker may run ahead"
    )
    epochs: int = Field(default=30, ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1, le=65536, description="per worker, per step")
    learning_rate: float = Field(default=1e-3, gt=0.0, le=10.0)
    optimizer: Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0.0, le=1.0)
    lr_schedule: Literal["constant", "step", "cosine", "plateau"] = "constant"
    warmup_epochs: int = Field(default=0, ge=0, le=1000, description="linear warm-up first")
    lr_step_epochs: int = Field(default=10, ge=1, le=1000, description="step: epochs per decay")
    lr_gamma: float = Field(default=0.1, gt=0.0, lt=1.0, description="step/plateau: factor")
    lr_patience: int = Field(default=2, ge=1, le=1000, description="plateau: epochs to wait")
    grad_clip_norm: float | None = Field(default=None, gt=0.0, le=1e6)
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    checkpoint_every: int = Field(default=5, ge=1, le=1000)
    patience: int = Field(default=5, ge=1, le=1000)
    max_restarts: int = Field(
        default=3,
        ge=0,
        le=20,
        description="times the job is resumed on the nodes left after losing one; 0 fails it",
    )
    min_workers: int = Field(
        default=1, ge=1, le=16, description="the fewest workers a recovered job may go on with"
    )
    resume_from: uuid.UUID | None = Field(
        default=None,
        description="an earlier workflow of yours: this run continues from its newest "
        "checkpoint (set by `POST /workflows/{id}/retry`)",
    )
    deadline_s: float | None = Field(
        default=None,
        gt=0,
        le=7 * 24 * 3600,
        description="training fails if it has not finished this long after it started "
        "(default: estimated from the epochs and the pace of the last one)",
    )

    @model_validator(mode="after")
    def _warm_up_within_the_run(self) -> TrainingSpec:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})"
            )
        return self

    @model_validator(mode="after")
    def _parameter_server_settings_only_for_it(self) -> TrainingSpec:
        if self.strategy != "parameter_server" and self.ps_mode != "sync":
            raise ValueError(
                f"ps_mode {self.ps_mode!r} applies to strategy parameter_server, "
                f"not {self.strategy!r}"
            )
        if self.max_staleness and self.ps_mode != "async":
            raise ValueError("max_staleness applies to ps_mode 'async' only")
        return self


class ClusterSpec(_Strict):
    workers: int = Field(default=2, ge=1, le=16)
    parameter_servers: int = Field(
        default=1, ge=0, le=4, description="the parameter_server strategy shards across them"
    )
    validators: int = Field(default=1, ge=1, le=4)

    @property
    def node_count(self) -> int:
        return self.workers + self.parameter_servers + self.validators


# Gates that judge one kind of model only; a spec that sets one for the other kind is refused.
CLASSIFICATION_GATES = frozenset({"min_accuracy", "max_train_val_gap"})
REGRESSION_GATES = frozenset({"min_r2", "max_rmse", "max_train_val_r2_gap"})


class GatesSpec(_Strict):
    min_accuracy: float = Field(
        default=0.85, ge=0.0, le=1.0, description="classification: test accuracy"
    )
    max_p99_latency_ms: float = Field(default=100.0, gt=0.0)
    max_train_val_gap: float = Field(
        default=0.05, ge=0.0, le=1.0, description="classification: train minus val accuracy"
    )
    min_r2: float = Field(
        default=0.3, ge=0.0, le=1.0, description="regression: R² on the test split"
    )
    max_rmse: float | None = Field(
        default=None,
        gt=0.0,
        description="regression: RMSE on the test split, in the target's units (none by default)",
    )
    max_train_val_r2_gap: float = Field(
        default=0.2, ge=0.0, le=1.0, description="regression: train minus validation R²"
    )
    min_nodes: int = Field(default=4, ge=1, le=64)


class BatchingSpec(_Strict):
    max_batch_size: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Rows of concurrent requests a served model runs in one forward pass; "
        "1 (the default) serves each request alone",
    )
    max_wait_us: int = Field(
        default=500,
        ge=0,
        le=100_000,
        description="How long a batch short of its size waits for requests already in flight",
    )


class DeploySpec(_Strict):
    port: int | None = Field(default=None, ge=1024, le=65535)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    precision: Literal["float32", "int8"] = Field(
        default="float32",
        description="int8: serve the weights dynamically quantized (ONNX Runtime); the "
        "smoke test's gates judge the quantized model, and the deployment records its "
        "accuracy, speed and difference from float32.",
    )
    public: bool = Field(
        default=False,
        description="Anyone may ask the served model. Otherwise requests need a bearer "
        "token of the model's tenant or an API key with the models:predict scope.",
    )


class WorkflowSpec(_Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: str = Field(
        max_length=2000,
        description=f"One of the bundled datasets ({', '.join(BUNDLED_DATASETS)}), "
        "synthetic_classification?rows=…&features=…&classes=…&seed=… or "
        "synthetic_regression?rows=…&features=…&seed=… (each knob optional); or an uploaded "
        "dataset's id (POST /datasets), or a URL to import one from",
    )
    model: ModelSpec = Field(default_factory=ModelSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    deploy: DeploySpec = Field(default_factory=DeploySpec)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if _is_uuid(name):
            return str(uuid.UUID(name))
        if is_stored_dataset(name):
            return name
        if is_synthetic(name):
            return parse_synthetic(name).name  # canonical: the same rows, the same name
        if name not in BUNDLED_DATASETS:
            raise ValueError(
                f"unknown dataset {name!r}; choose one of: {', '.join(BUNDLED_DATASETS)}, "
                f"{CLASSIFICATION}?rows=…&features=…&classes=…, "
                f"or {REGRESSION}?rows=…&features=…"
            )
        return name

    @field_validator("model", mode="before")
    @classmethod
    def _auto_model(cls, model: Any) -> Any:
        return {"type": "auto"} if model == "auto" else model  # `model: auto` in YAML

    @model_validator(mode="after")
    def _layers_fit_the_data(self, info: ValidationInfo) -> WorkflowSpec:
        """A layer spec is checked against the dataset's rows now, not when it trains; under
        `model: auto` the training settings the spec left unset are chosen now, so the
        stored spec says what runs (shared/auto_design.py). A stored dataset's shape is
        known once the platform has looked it up, which validates the spec again with it."""
        from shared.auto_design import auto_training

        dataset = dataset_shape(self.dataset, info.context)
        if dataset is None:
            return self
        model = self.model
        try:
            shape = input_shape_for(dataset.features, model.input_shape)
            if model.layers is not None:
                infer_shapes(model.layers, shape, dataset.outputs)
                check_embeddings(model.layers, dict(dataset.categorical))
        except LayerShapeError as exc:
            raise ValueError(f"model: {exc}") from exc
        if dataset.categorical and model.type == "mlp":
            raise ValueError(
                "model: the dataset has categorical columns, which an MLP of hidden_layers "
                "cannot embed: use type layers with an embedding layer for each, or model: auto"
            )
        if model.type == "auto":
            unset = set(TrainingSpec.model_fields) - self.training.model_fields_set
            workers = 1 if self.training.strategy == "single" else self.cluster.workers
            chosen, _ = auto_training(dataset.rows, workers, unset)
            given = self.training.model_dump(exclude_unset=True)
            self.training = TrainingSpec.model_validate({**given, **chosen})
        return self

    @model_validator(mode="after")
    def _gates_are_tighter_or_equal(self, info: ValidationInfo) -> WorkflowSpec:
        # A spec may tighten the platform's quality gates, never loosen them.
        defaults = GatesSpec()
        if self.gates.min_accuracy < defaults.min_accuracy:
            raise ValueError("gates.min_accuracy may not be below the platform's 0.85")
        if self.gates.max_p99_latency_ms > defaults.max_p99_latency_ms:
            raise ValueError("gates.max_p99_latency_ms may not exceed the platform's 100 ms")
        if self.gates.max_train_val_gap > defaults.max_train_val_gap:
            raise ValueError("gates.max_train_val_gap may not exceed the platform's 0.05")
        if self.gates.min_r2 < defaults.min_r2:
            raise ValueError(f"gates.min_r2 may not be below the platform's {defaults.min_r2}")
        if self.gates.max_train_val_r2_gap > defaults.max_train_val_r2_gap:
            raise ValueError(
                "gates.max_train_val_r2_gap may not exceed the platform's "
                f"{defaults.max_train_val_r2_gap}"
            )
        if self.gates.min_nodes < defaults.min_nodes:
            raise ValueError("gates.min_nodes may not be below the platform's 4")
        # Judged by value, not by whether the field was given: a stored spec is dumped with
        # every gate at its default and must validate again.
        shape = dataset_shape(self.dataset, info.context)
        task = shape.task if shape is not None else None
        foreign = REGRESSION_GATES if task == "classification" else CLASSIFICATION_GATES
        misplaced = sorted(
            name
            for name in foreign
            if task is not None and getattr(self.gates, name) != getattr(defaults, name)
        )
        if misplaced:
            raise ValueError(
                f"gates.{misplaced[0]} does not apply to {self.dataset!r}, a {task} dataset"
            )
        strategy = self.training.strategy
        if strategy == "parameter_server" and self.cluster.parameter_servers < 1:
            raise ValueError("strategy parameter_server needs cluster.parameter_servers >= 1")
        if self.training.min_workers > self.cluster.workers:
            raise ValueError(
                f"training.min_workers ({self.training.min_workers}) exceeds cluster.workers "
                f"({self.cluster.workers})"
            )
        if self.cluster.node_count < self.gates.min_nodes:
            raise ValueError(
                f"cluster has {self.cluster.node_count} nodes; the gates require "
                f"{self.gates.min_nodes}"
            )
        return self


class TrainingChanges(_Strict):
    """What a retry may change in the training it resumes: the rest must stay as it was for
    the checkpoint to continue the same run."""

    learning_rate: float | None = Field(default=None, gt=0.0, le=10.0)
    grad_clip_norm: float | None = Field(default=None, gt=0.0, le=1e6)
    epochs: int | None = Field(default=None, ge=1, le=1000)
    patience: int | None = Field(default=None, ge=1, le=1000)


class RetryRequest(_Strict):
    """The body of `POST /workflows/{id}/retry` and `POST /jobs/{id}/resume`."""

    training: TrainingChanges = Field(default_factory=TrainingChanges)
