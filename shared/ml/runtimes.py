"""How a served model's forward pass runs: in torch, as it was trained, or exported to ONNX
and run by ONNX Runtime. The model server measures both on the machine that serves it and
keeps the faster (`fastest_runtime`); ONNX is used only when it answers as torch does."""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

# Normalized float32 rows in, the network's outputs (logits, or standardized values) out.
Forward = Callable[[np.ndarray], np.ndarray]

# The largest difference from torch's outputs on the probe rows that ONNX may show.
ONNX_TOLERANCE = 1e-4
_PROBE_ROWS = 64
_TIMED_CALLS = 300


@dataclass(frozen=True)
class RuntimeChoice:
    name: str  # "torch" or "onnxruntime"
    forward: Forward
    single_row_us: dict[str, float]  # each candidate's median single-row forward pass
    onnx_difference: float | None  # ONNX against torch on the probe rows; None: no ONNX


def torch_forward(model: nn.Module) -> Forward:
    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            outputs: np.ndarray = model(torch.from_numpy(x)).numpy()
            return outputs

    return forward


def onnx_forward(model: nn.Module, num_features: int) -> Forward:
    """The model exported to ONNX (any number of rows) in an ONNX Runtime session of one
    thread, as the server runs torch. Raises when the model does not export."""
    import onnxruntime

    exported = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript-based exporter: it needs no more packages and exports these
        # networks in milliseconds, where the torch.export-based one takes seconds.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.zeros(1, num_features),),
            exported,  # type: ignore[arg-type]  # a file object is accepted as well
            input_names=["rows"],
            output_names=["outputs"],
            dynamic_axes={"rows": {0: "n"}, "outputs": {0: "n"}},
            dynamo=False,
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        exported.getvalue(), options, providers=["CPUExecutionProvider"]
    )

    def forward(x: np.ndarray) -> np.ndarray:
        outputs: np.ndarray = session.run(None, {"rows": x})[0]
        return outputs

    return forward


def fastest_runtime(model: nn.Module, num_features: int) -> RuntimeChoice:
    """Torch, or ONNX Runtime when the export answers as torch does on probe rows and a
    single-row forward pass is faster in it, measured here."""
    candidates = {"torch": torch_forward(model)}
    probe = np.random.default_rng(0).standard_normal((_PROBE_ROWS, num_features))
    probe = probe.astype(np.float32)
    expected = candidates["torch"](probe)
    difference = None
    try:
        onnx = onnx_forward(model, num_features)
        difference = float(np.abs(onnx(probe) - expected).max())
    except Exception as exc:  # any exporter or runtime failure: torch serves it
        logger.warning("the model does not run in ONNX Runtime (%s); torch serves it", exc)
    else:
        if difference <= ONNX_TOLERANCE:
            candidates["onnxruntime"] = onnx
        else:
            logger.warning("ONNX differs from torch by %.2g; torch serves it", difference)
    timings = {name: _single_row_us(forward, probe[:1]) for name, forward in candidates.items()}
    name = min(timings, key=timings.__getitem__)
    return RuntimeChoice(name, candidates[name], timings, difference)


def _single_row_us(forward: Forward, row: np.ndarray) -> float:
    for _ in range(_TIMED_CALLS // 10):  # warm caches and lazy initialisation first
        forward(row)
    samples = []
    for _ in range(_TIMED_CALLS):
        started = time.perf_counter()
        forward(row)
        samples.append(time.perf_counter() - started)
    return float(np.median(samples) * 1e6)
