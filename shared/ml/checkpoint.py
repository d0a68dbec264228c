"""Saving and loading models and training checkpoints on any fsspec filesystem.

Weights are always safetensors; the optimizer and RNG state of a training checkpoint use
torch.save but are read back with `weights_only=True`, so loading never runs arbitrary pickle.
Paths may be plain paths or fsspec URLs (`file:///...`, `memory://...`, `s3://...`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from shared.ml.architecture import Architecture, build_model, count_parameters
from shared.ml.data import Normalization, TargetNormalization
from shared.ml.files import (
    CHECKPOINT_METADATA,
    MODEL_METADATA,
    MODEL_ONNX,
    MODEL_WEIGHTS,
    TRAINER_STATE,
)
from shared.ml.runtimes import checked_onnx

__all__ = ["CHECKPOINT_METADATA", "MODEL_METADATA", "MODEL_WEIGHTS", "TRAINER_STATE"]

MODEL_FORMAT = "nexus-mlp/1"
CHECKPOINT_FORMAT = "nexus-training-checkpoint/1"

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module  # in eval mode
    architecture: Architecture
    normalization: Normalization
    class_names: list[str]  # empty for regression
    metadata: dict[str, Any]
    # Regression: maps the network's output back to the target's units.
    target_normalization: TargetNormalization | None = None


@dataclass(frozen=True)
class TrainingCheckpoint:
    """Everything a Trainer needs to continue a run exactly where it stopped."""

    epoch: int  # epochs completed
    architecture: Architecture
    config: dict[str, Any]  # the TrainConfig of the run, as JSON
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    rng_state: torch.Tensor  # torch's CPU generator: dropout draws from it
    progress: dict[str, Any]  # trainer bookkeeping (history, convergence), JSON-able
    # The best validation epoch's weights so far, so a resumed run still keeps the best model.
    best_model_state: dict[str, torch.Tensor] | None = None


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP/DataParallel wrapper, so saved keys have no prefix."""
    if isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel):
        return model.module
    return model


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU snapshot of the weights that later training steps cannot modify."""
    return {k: v.detach().cpu().clone() for k, v in unwrap_model(model).state_dict().items()}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _json_default(value: Any) -> Any:
    # Metrics often arrive as numpy scalars or arrays, which json cannot encode itself.
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _write(directory: PathLike, name: str, data: bytes) -> None:
    fs, root = fsspec.core.url_to_fs(os.fspath(directory))
    fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root.rstrip('/')}/{name}", "wb") as f:
        f.write(data)


def _read(directory: PathLike, name: str) -> bytes:
    fs, root = fsspec.core.url_to_fs(os.fspath(directory))
    path = f"{root.rstrip('/')}/{name}"
    if not fs.exists(path):
        raise FileNotFoundError(f"{name} not found in {os.fspath(directory)}")
    with fs.open(path, "rb") as f:
        data: bytes = f.read()
    return data


def _write_json(directory: PathLike, name: str, payload: dict[str, Any]) -> None:
    text = json.dumps(payload, indent=2, default=_json_default)
    _write(directory, name, text.encode())


def _read_json(directory: PathLike, name: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(_read(directory, name))
    return payload


def _read_weights(source: PathLike, metadata: dict[str, Any]) -> dict[str, torch.Tensor]:
    # The checksum recorded in the metadata (written last) catches a weights file from another
    # save, e.g. an overwrite that was cut short, as well as a truncated copy.
    weights = _read(source, MODEL_WEIGHTS)
    if hashlib.sha256(weights).hexdigest() != metadata["weights_sha256"]:
        raise ValueError(f"{MODEL_WEIGHTS} in {os.fspath(source)} does not match its checksum")
    return load_safetensors(weights)


def _model_from_weights(architecture: Architecture, weights: dict[str, torch.Tensor]) -> nn.Module:
    # Building the module draws init values from the global RNG; forking keeps loading a model
    # from shifting the random stream of a training run in the same process.
    with torch.random.fork_rng(devices=[]):
        model = build_model(architecture)
    model.load_state_dict(weights, strict=True)
    return model


def save_model(
    destination: PathLike,
    model: nn.Module,
    architecture: Architecture,
    normalization: Normalization,
    *,
    class_names: list[str],
    target_normalization: TargetNormalization | None = None,
    metrics: dict[str, Any] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> None:
    """Write `model.safetensors` and `model-metadata.json` into the `destination` folder; a
    regression model needs the `target_normalization` it was trained with, and no classes."""
    if len(class_names) != (architecture.num_classes or 0):
        raise ValueError(
            f"{len(class_names)} class names for a model with {architecture.num_classes} classes"
        )
    if (architecture.task == "regression") != (target_normalization is not None):
        raise ValueError("a target normalization belongs with a regression model, and only it")
    if normalization.num_features != architecture.input_dim:
        raise ValueError(
            f"normalization covers {normalization.num_features} features; "
            f"the model expects {architecture.input_dim}"
        )
    weights = save_safetensors(weights_of(model), metadata={"format": MODEL_FORMAT})
    _write(destination, MODEL_WEIGHTS, weights)
    was_training = model.training
    onnx = checked_onnx(model.eval(), architecture.input_dim)
    model.train(was_training)
    if onnx is not None:
        _write(destination, MODEL_ONNX, onnx)
    # Metadata goes last: a folder without it is an interrupted save, and loading refuses it.
    _write_json(
        destination,
        MODEL_METADATA,
        {
            "format": MODEL_FORMAT,
            "architecture": architecture.to_dict(),
            "normalization": normalization.to_dict(),
            "class_names": list(class_names),
            **(
                {"target_normalization": target_normalization.to_dict()}
                if target_normalization is not None
                else {}
            ),
            "metrics": metrics or {},
            "created_at": _now(),
            "torch_version": torch.__version__,
            "parameter_count": count_parameters(model),
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
            # The ONNX graph beside the weights, for serving without torch (None: no export).
            "onnx": {"file": MODEL_ONNX, "sha256": hashlib.sha256(onnx).hexdigest()}
            if onnx is not None
            else None,
            "extra": extra_metadata or {},
        },
    )


def load_model(source: PathLike) -> LoadedModel:
    """Load a folder written by save_model; the weights must match their recorded checksum."""
    metadata = _read_json(source, MODEL_METADATA)
    if metadata.get("format") != MODEL_FORMAT:
        raise ValueError(f"{os.fspath(source)} holds {metadata.get('format')!r}, not a model")
    architecture = Architecture.model_validate(metadata["architecture"])
    model = _model_from_weights(architecture, _read_weights(source, metadata))
    model.eval()
    return LoadedModel(
        model=model,
        architecture=architecture,
        normalization=Normalization.from_dict(metadata["normalization"]),
        class_names=list(metadata["class_names"]),
        metadata=metadata,
        target_normalization=(
            TargetNormalization.from_dict(metadata["target_normalization"])
            if architecture.task == "regression"
            else None
        ),
    )


def save_checkpoint(destination: PathLike, checkpoint: TrainingCheckpoint) -> None:
    """Write a training checkpoint folder: weights, trainer state, then metadata."""
    weights = save_safetensors(checkpoint.model_state, metadata={"format": CHECKPOINT_FORMAT})
    _write(destination, MODEL_WEIGHTS, weights)
    state = io.BytesIO()
    torch.save(
        {
            "epoch": checkpoint.epoch,
            "optimizer": checkpoint.optimizer_state,
            "rng_state": checkpoint.rng_state,
            "progress": checkpoint.progress,
            "best_model_state": checkpoint.best_model_state,
        },
        state,
    )
    _write(destination, TRAINER_STATE, state.getvalue())
    _write_json(
        destination,
        CHECKPOINT_METADATA,
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": checkpoint.epoch,
            "architecture": checkpoint.architecture.to_dict(),
            "config": checkpoint.config,
            "created_at": _now(),
            "torch_version": torch.__version__,
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
        },
    )


def load_checkpoint(source: PathLike) -> TrainingCheckpoint:
    metadata = _read_json(source, CHECKPOINT_METADATA)
    if metadata.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{os.fspath(source)} holds {metadata.get('format')!r}, not a checkpoint")
    state = torch.load(io.BytesIO(_read(source, TRAINER_STATE)), weights_only=True)
    # Files from two different saves (an overwrite cut short) would resume a mixed state.
    if state["epoch"] != metadata["epoch"]:
        raise ValueError(f"{TRAINER_STATE} in {os.fspath(source)} is from another save")
    return TrainingCheckpoint(
        epoch=int(metadata["epoch"]),
        architecture=Architecture.model_validate(metadata["architecture"]),
        config=metadata["config"],
        model_state=_read_weights(source, metadata),
        optimizer_state=state["optimizer"],
        rng_state=state["rng_state"],
        progress=state["progress"],
        best_model_state=state.get("best_model_state"),
    )


def model_from_checkpoint(checkpoint: TrainingCheckpoint) -> nn.Module:
    """The checkpoint's weights in a freshly built module (train mode), e.g. to export it."""
    return _model_from_weights(checkpoint.architecture, checkpoint.model_state)
