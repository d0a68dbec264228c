"""A network described layer by layer in the workflow spec, checked for shape before training.

`model.layers` is the body of the network: embeddings of categorical columns, dense,
conv1d/conv2d, pooling, flatten, dropout, batchnorm, layernorm, activations and residual blocks.
The platform adds the output layer (one unit per class, or one value for a regression), so a
spec need not know the class count. Rows arrive flat (a served model takes a list of numbers
per row); `model.input_shape` (e.g. `[1, 8, 8]`) says how each row is laid out for the first
layer, by default `[features]`.

`infer_shapes` walks the layers without torch, so the spec is refused at submission with
the layer and the mismatch named (`layers[3] conv2d expects 3-D input, got (N, 64)`); the
same walk counts the parameters. `shared.ml.networks` builds the torch module from it.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Activation = Literal["relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu"]
# Shapes leave out the batch dimension: (64,) is a row of 64 features, (16, 8, 8) a 16-channel
# 8x8 feature map.
Shape = tuple[int, ...]

MAX_LAYERS = 64
MAX_PARAMETERS = 50_000_000  # ~200 MB of float32 weights: past what a CPU node should train
_MAX_UNITS = 4096
_MAX_KERNEL = 64


class _Layer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Dense(_Layer):
    type: Literal["dense"]
    units: int = Field(ge=1, le=_MAX_UNITS)
    activation: Activation | None = None


class _Conv(_Layer):
    filters: int = Field(ge=1, le=1024)
    kernel_size: int = Field(default=3, ge=1, le=_MAX_KERNEL)
    stride: int = Field(default=1, ge=1, le=_MAX_KERNEL)
    padding: Literal["same", "valid"] = "same"
    activation: Activation | None = None


class Conv1d(_Conv):
    type: Literal["conv1d"]


class Conv2d(_Conv):
    type: Literal["conv2d"]


class _Pool(_Layer):
    kernel_size: int = Field(default=2, ge=1, le=_MAX_KERNEL)
    stride: int | None = Field(default=None, ge=1, le=_MAX_KERNEL, description="= kernel_size")


class MaxPool1d(_Pool):
    type: Literal["maxpool1d"]


class MaxPool2d(_Pool):
    type: Literal["maxpool2d"]


class AvgPool1d(_Pool):
    type: Literal["avgpool1d"]


class AvgPool2d(_Pool):
    type: Literal["avgpool2d"]


class GlobalAvgPool(_Layer):
    """The mean over every position of each channel: (C, ...) -> (C,)."""

    type: Literal["global_avgpool"]


class Flatten(_Layer):
    type: Literal["flatten"]


class Dropout(_Layer):
    type: Literal["dropout"]
    rate: float = Field(ge=0.0, lt=0.9)


class BatchNorm(_Layer):
    """Over the channels of a feature map, or the features of a row."""

    type: Literal["batchnorm"]


class LayerNorm(_Layer):
    """Over everything but the batch dimension."""

    type: Literal["layernorm"]


class ActivationLayer(_Layer):
    type: Literal["activation"]
    name: Activation


class Embedding(_Layer):
    """One categorical column of the input row (its codes: POST /datasets `categorical`),
    looked up in a learned table of `dim` values per category. Codes outside the table share
    one extra row, for categories training never saw. Embedding layers come first, one per
    column: a row of F features, k of them embedded, becomes the F - k other columns followed
    by the k embeddings."""

    type: Literal["embedding"]
    column: int = Field(ge=0, le=65_535, description="the column's index in the input row")
    categories: int = Field(ge=2, le=1000, description="how many categories the column has")
    dim: int = Field(ge=1, le=256)


class Residual(_Layer):
    """`x + body(x)`: the body must give back the shape it was given."""

    type: Literal["residual"]
    layers: list[Layer] = Field(min_length=1, max_length=16)


Layer = Annotated[
    Dense
    | Conv1d
    | Conv2d
    | MaxPool1d
    | MaxPool2d
    | AvgPool1d
    | AvgPool2d
    | GlobalAvgPool
    | Flatten
    | Dropout
    | BatchNorm
    | LayerNorm
    | ActivationLayer
    | Embedding
    | Residual,
    Field(discriminator="type"),
]
Residual.model_rebuild()


class LayerShapeError(ValueError):
    """A layer that cannot take the shape the layers before it give."""


def describe(shape: Shape) -> str:
    return "(" + ", ".join(["N", *(str(d) for d in shape)]) + ")"


def _spatial(kind: str, where: str, shape: Shape, dims: int) -> None:
    if len(shape) != dims + 1:
        layout = "(N, C, L)" if dims == 1 else "(N, C, H, W)"
        raise LayerShapeError(
            f"{where} {kind} expects {dims + 2}-D input {layout}, got {describe(shape)}"
        )


def _sliding(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def _conv(layer: Conv1d | Conv2d, where: str, shape: Shape, dims: int) -> tuple[Shape, int]:
    kind = layer.type
    _spatial(kind, where, shape, dims)
    channels, *sizes = shape
    if layer.padding == "same":
        if layer.stride != 1:
            raise LayerShapeError(f"{where} {kind}: padding 'same' needs stride 1")
        out = sizes
    else:
        out = [_sliding(s, layer.kernel_size, layer.stride, 0) for s in sizes]
        if min(out) < 1:
            raise LayerShapeError(
                f"{where} {kind} kernel {layer.kernel_size} is larger than its input "
                f"{describe(shape)}"
            )
    parameters = (channels * layer.kernel_size**dims + 1) * layer.filters
    return (layer.filters, *out), parameters


def _pool(layer: _Pool, kind: str, where: str, shape: Shape, dims: int) -> Shape:
    _spatial(kind, where, shape, dims)
    channels, *sizes = shape
    stride = layer.stride or layer.kernel_size
    out = [_sliding(s, layer.kernel_size, stride, 0) for s in sizes]
    if min(out) < 1:
        raise LayerShapeError(
            f"{where} {kind} kernel {layer.kernel_size} is larger than its input {describe(shape)}"
        )
    return (channels, *out)


def _step(layer: Layer, where: str, shape: Shape) -> tuple[Shape, int]:
    """The shape `layer` gives for `shape`, and its parameter count."""
    match layer:
        case Dense():
            if len(shape) != 1:
                raise LayerShapeError(
                    f"{where} dense expects 2-D input (N, features), got {describe(shape)}; "
                    "put a flatten or global_avgpool layer before it"
                )
            return (layer.units,), (shape[0] + 1) * layer.units
        case Conv1d():
            return _conv(layer, where, shape, 1)
        case Conv2d():
            return _conv(layer, where, shape, 2)
        case MaxPool1d() | AvgPool1d():
            return _pool(layer, layer.type, where, shape, 1), 0
        case MaxPool2d() | AvgPool2d():
            return _pool(layer, layer.type, where, shape, 2), 0
        case GlobalAvgPool():
            if len(shape) < 2:
                raise LayerShapeError(
                    f"{where} global_avgpool expects a feature map (N, C, ...), "
                    f"got {describe(shape)}"
                )
            return (shape[0],), 0
        case Flatten():
            return (math.prod(shape),), 0
        case BatchNorm():
            if len(shape) > 3:
                raise LayerShapeError(
                    f"{where} batchnorm expects at most 4-D input, got {describe(shape)}"
                )
            return shape, 2 * shape[0]
        case LayerNorm():
            return shape, 2 * math.prod(shape)
        case Dropout() | ActivationLayer():
            return shape, 0
        case Embedding():
            raise LayerShapeError(
                f"{where} embedding: embedding layers come first, before any other layer"
            )
        case Residual():
            out, parameters = _walk(layer.layers, shape, f"{where}.layers")
            if out != shape:
                raise LayerShapeError(
                    f"{where} residual: its layers turn {describe(shape)} into "
                    f"{describe(out)}; a residual block must keep the shape"
                )
            return shape, parameters
    raise AssertionError(f"unhandled layer {layer!r}")


def output_shape(layer: Layer, shape: Shape) -> Shape:
    """The shape `layer` gives for input `shape` (checked already by `infer_shapes`)."""
    return _step(layer, "layer", shape)[0]


def _walk(layers: list[Layer], shape: Shape, prefix: str, start: int = 0) -> tuple[Shape, int]:
    total = 0
    for index in range(start, len(layers)):
        shape, parameters = _step(layers[index], f"{prefix}[{index}]", shape)
        total += parameters
    return shape, total


def leading_embeddings(layers: list[Layer]) -> list[Embedding]:
    """The embedding layers a spec starts with."""
    embeddings: list[Embedding] = []
    for layer in layers:
        if not isinstance(layer, Embedding):
            break
        embeddings.append(layer)
    return embeddings


def _embed(embeddings: list[Embedding], shape: Shape) -> tuple[Shape, int]:
    if not embeddings:
        return shape, 0
    if len(shape) != 1:
        raise LayerShapeError(
            f"layers[0] embedding expects the flat input row (N, features), got "
            f"{describe(shape)}; leave model.input_shape out"
        )
    seen: set[int] = set()
    for index, layer in enumerate(embeddings):
        if layer.column >= shape[0]:
            raise LayerShapeError(
                f"layers[{index}] embedding: column {layer.column} is not in a row of "
                f"{shape[0]} features"
            )
        if layer.column in seen:
            raise LayerShapeError(
                f"layers[{index}] embedding: column {layer.column} is embedded twice"
            )
        seen.add(layer.column)
    width = shape[0] - len(embeddings) + sum(layer.dim for layer in embeddings)
    return (width,), sum((layer.categories + 1) * layer.dim for layer in embeddings)


def check_embeddings(layers: list[Layer], categorical: dict[int, int]) -> None:
    """Each categorical column of the data (index -> categories) embedded, and only those."""
    embeddings = leading_embeddings(layers)
    for index, layer in enumerate(embeddings):
        if layer.column not in categorical:
            columns = ", ".join(str(c) for c in sorted(categorical)) or "none"
            raise LayerShapeError(
                f"layers[{index}] embedding: column {layer.column} is not a categorical column "
                f"of the dataset (its categorical columns: {columns})"
            )
        if layer.categories < categorical[layer.column]:
            raise LayerShapeError(
                f"layers[{index}] embedding: column {layer.column} has "
                f"{categorical[layer.column]} categories; the layer has room for "
                f"{layer.categories}"
            )
    missing = sorted(set(categorical) - {layer.column for layer in embeddings})
    if missing:
        column = missing[0]
        raise LayerShapeError(
            f"column {column} is categorical ({categorical[column]} categories): start the "
            "layers with an embedding layer for it"
        )


def count_layers(layers: list[Layer]) -> int:
    return sum(1 + (count_layers(x.layers) if isinstance(x, Residual) else 0) for x in layers)


def infer_shapes(layers: list[Layer], input_shape: Shape, num_outputs: int) -> int:
    """Check that `layers` take rows of `input_shape` and end in a flat row the output layer
    (`num_outputs` units) can take; returns the network's parameter count, output layer
    included. Raises LayerShapeError naming the first layer that does not fit."""
    if count_layers(layers) > MAX_LAYERS:
        raise LayerShapeError(f"at most {MAX_LAYERS} layers, residual blocks' included")
    embeddings = leading_embeddings(layers)
    shape, parameters = _embed(embeddings, input_shape)
    shape, walked = _walk(layers, shape, "layers", start=len(embeddings))
    parameters += walked
    if len(shape) != 1:
        raise LayerShapeError(
            f"the layers end with {describe(shape)}; the output layer takes (N, features): "
            "end with a flatten or global_avgpool layer"
        )
    parameters += (shape[0] + 1) * num_outputs
    if parameters > MAX_PARAMETERS:
        raise LayerShapeError(
            f"the network has {parameters:,} parameters; at most {MAX_PARAMETERS:,} are allowed"
        )
    return parameters


def input_shape_for(features: int, input_shape: list[int] | None) -> Shape:
    """The shape of one row for the first layer: `input_shape`, which must hold exactly the
    row's features, else the flat row."""
    if input_shape is None:
        return (features,)
    if math.prod(input_shape) != features:
        raise LayerShapeError(
            f"model.input_shape {list(input_shape)} holds {math.prod(input_shape)} values a row; "
            f"the dataset's rows have {features} features"
        )
    return tuple(input_shape)
