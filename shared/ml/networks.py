"""The torch module of a layer spec (shared/layer_spec.py), whose shapes were checked there."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from shared.layer_spec import (
    ActivationLayer,
    AvgPool1d,
    AvgPool2d,
    BatchNorm,
    Conv1d,
    Conv2d,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool,
    Layer,
    LayerNorm,
    MaxPool1d,
    MaxPool2d,
    Residual,
    Shape,
    infer_shapes,
    leading_embeddings,
    output_shape,
)

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


class ResidualBlock(nn.Module):
    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class GlobalAveragePool(nn.Module):
    """The mean over every position of each channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).mean(dim=2)


class CategoricalEmbeddings(nn.Module):
    """The row's other columns, then each embedded column's learned vector. A code that is
    not a whole number in [0, categories) — a category training never saw — takes the table's
    last row, so a served model answers it instead of failing."""

    def __init__(self, width: int, embeddings: Sequence[Embedding]) -> None:
        super().__init__()
        columns = [layer.column for layer in embeddings]
        kept = [i for i in range(width) if i not in set(columns)]
        self.register_buffer("kept", torch.tensor(kept, dtype=torch.long), persistent=False)
        self.columns = columns
        self.categories = [layer.categories for layer in embeddings]
        self.tables = nn.ModuleList(
            nn.Embedding(layer.categories + 1, layer.dim) for layer in embeddings
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept: torch.Tensor = self.kept  # type: ignore[assignment]
        parts = [x.index_select(1, kept)]
        for column, categories, table in zip(
            self.columns, self.categories, self.tables, strict=True
        ):
            codes = x[:, column]
            known = (codes >= 0) & (codes < categories) & (codes == codes.round())
            index = torch.where(known, codes, torch.full_like(codes, categories)).long()
            parts.append(table(index))
        return torch.cat(parts, dim=1)


def _with_activation(module: nn.Module, activation: str | None) -> list[nn.Module]:
    return [module] if activation is None else [module, ACTIVATIONS[activation]()]


def _modules(layer: Layer, shape: Shape) -> tuple[list[nn.Module], Shape]:
    """The modules of one layer for input `shape`, and the shape they give."""
    out = output_shape(layer, shape)
    match layer:
        case Dense():
            return _with_activation(nn.Linear(shape[0], layer.units), layer.activation), out
        case Conv1d() | Conv2d():
            conv = nn.Conv1d if isinstance(layer, Conv1d) else nn.Conv2d
            module = conv(
                shape[0],
                layer.filters,
                layer.kernel_size,
                stride=layer.stride,
                padding=layer.padding,
            )
            return _with_activation(module, layer.activation), out
        case MaxPool1d():
            return [nn.MaxPool1d(layer.kernel_size, layer.stride or layer.kernel_size)], out
        case MaxPool2d():
            return [nn.MaxPool2d(layer.kernel_size, layer.stride or layer.kernel_size)], out
        case AvgPool1d():
            return [nn.AvgPool1d(layer.kernel_size, layer.stride or layer.kernel_size)], out
        case AvgPool2d():
            return [nn.AvgPool2d(layer.kernel_size, layer.stride or layer.kernel_size)], out
        case GlobalAvgPool():
            return [GlobalAveragePool()], out
        case Flatten():
            return [nn.Flatten()], out
        case BatchNorm():
            return [nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0])], out
        case LayerNorm():
            return [nn.LayerNorm(list(shape))], out
        case Dropout():
            return [nn.Dropout(layer.rate)], out
        case ActivationLayer():
            return [ACTIVATIONS[layer.name]()], out
        case Residual():
            return [ResidualBlock(_sequential(layer.layers, shape)[0])], out
    raise AssertionError(f"unhandled layer {layer!r}")


def _sequential(layers: Sequence[Layer], shape: Shape) -> tuple[nn.Sequential, Shape]:
    modules: list[nn.Module] = []
    for layer in layers:
        built, shape = _modules(layer, shape)
        modules.extend(built)
    return nn.Sequential(*modules), shape


def build_network(layers: Sequence[Layer], input_shape: Shape, num_outputs: int) -> nn.Sequential:
    """Flat rows in, `num_outputs` values out: the rows unflattened to `input_shape`, the
    spec's layers, then the output layer. Initialization draws from torch's global RNG."""
    infer_shapes(list(layers), input_shape, num_outputs)  # raises naming the layer
    embeddings = leading_embeddings(list(layers))
    front: list[nn.Module] = [] if len(input_shape) == 1 else [nn.Unflatten(1, input_shape)]
    if embeddings:
        front = [CategoricalEmbeddings(input_shape[0], embeddings)]
        width = input_shape[0] - len(embeddings) + sum(layer.dim for layer in embeddings)
        input_shape = (width,)
    body, shape = _sequential(layers[len(embeddings) :], input_shape)
    return nn.Sequential(*front, *body, nn.Linear(shape[0], num_outputs))
