"""A network's architecture: a validated description, a default design, and the torch module.

Either an MLP (`hidden_layers`, the default design) or a layer spec (`layers`, see
shared/layer_spec.py) over rows laid out as `input_shape`. Both take flat rows of
`input_dim` features and give one logit per class (`task` classification) or one value, the
standardized target (`task` regression).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.layer_spec import Layer, LayerShapeError, infer_shapes, input_shape_for
from shared.synthetic import Task

if TYPE_CHECKING:
    from torch import nn

Activation = Literal["relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu"]
_MAX_LAYER = 4096
HiddenWidth = Annotated[int, Field(ge=1, le=_MAX_LAYER)]


# Bounds for the default funnel; see design_architecture for why.
_MIN_WIDTH = 32
_MAX_WIDTH = 256


class Architecture(BaseModel):
    """input -> hidden layers (or the spec's layers) -> class logits, or one value."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_dim: int = Field(gt=0)
    task: Task = "classification"
    num_classes: int | None = Field(default=None, ge=2, description="classification only")
    hidden_layers: list[HiddenWidth] = Field(default_factory=list, max_length=8)
    activation: Activation = "relu"
    dropout: float = Field(default=0.0, ge=0.0, lt=0.9)
    layers: list[Layer] | None = Field(default=None, max_length=64)
    input_shape: list[int] | None = Field(default=None, min_length=1, max_length=3)

    @model_validator(mode="after")
    def _classes_for_classification(self) -> Architecture:
        if (self.task == "classification") != (self.num_classes is not None):
            raise ValueError("num_classes is required for classification, and only for it")
        return self

    @model_validator(mode="after")
    def _layers_fit(self) -> Architecture:
        if self.layers is None:
            if self.input_shape is not None:
                raise ValueError("input_shape belongs to a layer spec (layers)")
            return self
        if self.hidden_layers:
            raise ValueError("give either hidden_layers (an MLP) or layers, not both")
        try:
            infer_shapes(self.layers, self.shape, self.num_outputs)
        except LayerShapeError as exc:
            raise ValueError(str(exc)) from exc
        return self

    @property
    def num_outputs(self) -> int:
        """The output layer's width: one logit per class, or the one regressed value."""
        return self.num_classes if self.num_classes is not None else 1

    @property
    def shape(self) -> tuple[int, ...]:
        """One row as the first layer takes it."""
        return input_shape_for(self.input_dim, self.input_shape)

    @property
    def parameter_count(self) -> int:
        """Weights and biases of the network `build_model` makes, computed without torch."""
        if self.layers is not None:
            return infer_shapes(self.layers, self.shape, self.num_outputs)
        widths = [self.input_dim, *self.hidden_layers, self.num_outputs]
        pairs = zip(widths[:-1], widths[1:], strict=True)
        return sum((fan_in + 1) * fan_out for fan_in, fan_out in pairs)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def describe(self) -> str:
        """One line for reports: `MLP 64 -> 128 -> 10 (relu, dropout 0.1)`, or the layers."""
        if self.layers is None:
            widths = " -> ".join(
                str(w) for w in [self.input_dim, *self.hidden_layers, self.num_outputs]
            )
            return f"MLP {widths} ({self.activation}, dropout {self.dropout})"
        shape = "x".join(str(d) for d in self.shape)
        body = " -> ".join(_layer_name(layer) for layer in self.layers)
        return f"layers {shape} -> {body} -> dense({self.num_outputs})"


def _layer_name(layer: Layer) -> str:
    fields = layer.model_dump(exclude={"type"}, exclude_none=True)
    if "layers" in fields:
        inner = " -> ".join(_layer_name(x) for x in layer.layers)  # type: ignore[union-attr]
        return f"residual[{inner}]"
    return f"{layer.type}({', '.join(str(v) for v in fields.values())})"


def _next_power_of_two(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _clamp_width(n: int) -> int:
    return min(max(_next_power_of_two(n), _MIN_WIDTH), _MAX_WIDTH)


def design_architecture(
    num_features: int,
    num_classes: int | None,
    hidden_layers: list[int] | None = None,
    activation: Activation = "relu",
    dropout: float = 0.0,
) -> Architecture:
    """An Architecture for the data's shape; a default funnel when `hidden_layers` is None.

    The default is two layers: the first about twice the input width, so it has more units
    than inputs to form feature combinations, the second half of that, funnelling toward the
    logits. Widths are powers of two between 32 and 256: below 32 a small table (iris has 4
    features) leaves the network too little capacity, and above 256 the parameter count
    outgrows the bundled datasets (under 2,000 samples) and slows CPU training for little
    gain. The narrow layer
    stays at least as wide as the class count (up to 4096, the widest layer allowed) so it is
    not a bottleneck for the logits. `num_classes` 0 or None (a regression dataset's
    DatasetSplits.num_classes) designs a regression network, one output, the same funnel.
    """
    num_classes = num_classes or None
    outputs = num_classes or 1
    if hidden_layers is None:
        first = _clamp_width(2 * num_features)
        second = max(first // 2, _MIN_WIDTH, min(_next_power_of_two(outputs), _MAX_LAYER))
        hidden_layers = [max(first, second), second]
    return Architecture(
        input_dim=num_features,
        task="classification" if num_classes is not None else "regression",
        num_classes=num_classes,
        hidden_layers=hidden_layers,
        activation=activation,
        dropout=dropout,
    )


def build_model(architecture: Architecture) -> nn.Sequential:
    """The network returning logits; initialization draws from torch's global RNG."""
    from torch import nn  # here, so designing a network does not load torch

    from shared.ml.networks import ACTIVATIONS, build_network

    if architecture.layers is not None:
        return build_network(architecture.layers, architecture.shape, architecture.num_outputs)
    activations = ACTIVATIONS
    layers: list[nn.Module] = []
    width = architecture.input_dim
    for hidden in architecture.hidden_layers:
        layers.append(nn.Linear(width, hidden))
        layers.append(activations[architecture.activation]())
        if architecture.dropout > 0:
            layers.append(nn.Dropout(architecture.dropout))
        width = hidden
    layers.append(nn.Linear(width, architecture.num_outputs))
    return nn.Sequential(*layers)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
