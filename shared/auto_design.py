"""`model: auto`: a network and training settings designed from the data, with the reasons.

The rules are stated here and recorded with every design (the trainer's `neural/architecture`
memory key), so a user can see why the platform chose what it did:

- **Network.** Rows of a table (`input_shape` omitted or 1-D) get the MLP funnel of
  `shared.ml.architecture.design_architecture`. Images (`input_shape` [C, H, W]) get a small
  CNN: two 3x3 convolutions (16 then 32 filters, ReLU), each followed by 2x2 max pooling
  while the map is at least 8 pixels on a side, then a dense layer of 64 units and dropout
  0.25. Two convolution stages are what an image of up to 32x32 needs to see whole strokes;
  the pooling keeps the dense layer's input in the low thousands. A sequence ([C, L]) gets
  the 1-D version of the same. A table with categorical columns embeds each one
  (min(16, 1.6 * categories^0.56) values, fast.ai's rule of thumb) and puts an MLP funnel of
  two relu layers over the result.
- **Training** (only the settings the spec leaves unset): AdamW (weight decay 1e-4), robust
  to the learning rate across the models it designs; learning rate 1e-3; a batch of about a
  fiftieth of the training rows per worker, a power of two between 16 and 256 (small sets
  get enough steps per epoch, large ones an efficient batch); as many epochs as give about
  3,000 steps, between 10 and 100, with early stopping (patience 5) ending it sooner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from shared.layer_spec import Layer, Shape

_TARGET_STEPS = 3000
_CNN_FILTERS = (16, 32)
_MIN_POOLED_SIDE = 8


def _power_of_two_near(n: float) -> int:
    return 1 << max(round(math.log2(max(n, 1))), 0)


def auto_layers(
    input_shape: Shape, categorical: Sequence[tuple[int, int]] = ()
) -> tuple[list[Layer] | None, list[str]]:
    """The layers `model: auto` uses for rows of `input_shape` (None: the MLP funnel), whose
    `categorical` columns (index, categories) are embedded."""
    from pydantic import TypeAdapter

    if categorical:
        return _embedded_funnel(input_shape[0], categorical)
    if len(input_shape) == 1:
        return None, [
            f"rows of {input_shape[0]} features: an MLP funnel (first layer about twice the "
            "features, the second half of it, powers of two between 32 and 256)"
        ]
    dims = len(input_shape) - 1
    conv, pool = ("conv2d", "maxpool2d") if dims == 2 else ("conv1d", "maxpool1d")
    layers: list[dict[str, Any]] = []
    side = min(input_shape[1:])
    for filters in _CNN_FILTERS:
        layers.append({"type": conv, "filters": filters, "kernel_size": 3, "activation": "relu"})
        if side >= _MIN_POOLED_SIDE:
            layers.append({"type": pool, "kernel_size": 2})
            side //= 2
    layers += [
        {"type": "flatten"},
        {"type": "dense", "units": 64, "activation": "relu"},
        {"type": "dropout", "rate": 0.25},
    ]
    kind = "images" if dims == 2 else "sequences"
    shape = "x".join(str(d) for d in input_shape)
    reasons = [
        f"{kind} of {shape}: a small CNN, two 3x3 {conv} stages (16, 32 filters, relu), each "
        f"pooled 2x2 while the map is at least {_MIN_POOLED_SIDE} wide, then dense 64 and "
        "dropout 0.25"
    ]
    return TypeAdapter(list[Layer]).validate_python(layers), reasons


def _embedded_funnel(
    features: int, categorical: Sequence[tuple[int, int]]
) -> tuple[list[Layer], list[str]]:
    from pydantic import TypeAdapter

    # fast.ai's rule of thumb for an embedding's width, capped: 1.6 * categories^0.56.
    dims = {column: min(16, max(2, round(1.6 * count**0.56))) for column, count in categorical}
    layers: list[dict[str, Any]] = [
        {"type": "embedding", "column": column, "categories": count, "dim": dims[column]}
        for column, count in categorical
    ]
    width = features - len(categorical) + sum(dims.values())
    first = min(max(_power_of_two_near(2 * width), 32), 256)
    layers += [
        {"type": "dense", "units": first, "activation": "relu"},
        {"type": "dense", "units": max(first // 2, 32), "activation": "relu"},
    ]
    reasons = [
        f"rows of {features} features, {len(categorical)} of them categorical: each category "
        "embedded in min(16, 1.6 * categories^0.56) values (fast.ai's rule), then an MLP "
        f"funnel {first} -> {max(first // 2, 32)} (relu) over the {width} values"
    ]
    return TypeAdapter(list[Layer]).validate_python(layers), reasons


def auto_training(rows: int, workers: int, unset: set[str]) -> tuple[dict[str, Any], list[str]]:
    """Training settings for `rows` training rows on `workers` workers, for the fields in
    `unset` (those the spec left to the platform); the values and why."""
    per_worker = max(rows * 0.7 / max(workers, 1), 1)  # the train split's share
    batch = min(max(_power_of_two_near(per_worker / 50), 16), 256)
    steps = max(math.ceil(per_worker / batch), 1)
    epochs = min(max(math.ceil(_TARGET_STEPS / steps), 10), 100)
    chosen = {
        "optimizer": ("adamw", "AdamW: robust to the learning rate across designed models"),
        "weight_decay": (1e-4, "light weight decay with AdamW"),
        "learning_rate": (1e-3, "1e-3, Adam's usual rate"),
        "batch_size": (batch, f"about 1/50 of {round(per_worker)} rows per worker, 16..256"),
        "epochs": (epochs, f"about {_TARGET_STEPS} steps at {steps} per epoch, 10..100"),
        "patience": (5, "early stopping after 5 epochs without improvement"),
    }
    values = {name: value for name, (value, _) in chosen.items() if name in unset}
    reasons = [f"training.{name} {value}: {chosen[name][1]}" for name, value in values.items()]
    return values, reasons
