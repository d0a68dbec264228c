"""How a served model's forward pass runs: in torch, as it was trained; traced to TorchScript
and frozen; or exported to ONNX and run by ONNX Runtime. The model server measures each on
the machine that serves it and keeps the fastest (`fastest_runtime`); an export is used only
when it answers as torch does. With int8 precision the model is served by ONNX Runtime with
its weights dynamically quantized to int8 (`int8_runtime`), its difference and speed
measured beside the float runtimes'."""

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

# The largest difference from torch's outputs on the probe rows that an export may show.
EXPORT_TOLERANCE = 1e-4
_PROBE_ROWS = 64
_TIMED_CALLS = 300


@dataclass(frozen=True)
class RuntimeChoice:
    name: str  # "torch", "torchscript", "onnxruntime" or "onnxruntime-int8"
    forward: Forward
    single_row_us: dict[str, float]  # each usable runtime's median single-row forward pass
    # Each export's largest difference from torch's outputs on the probe rows (an export
    # that failed is missing; one over the tolerance is measured but not used).
    differences: dict[str, float]
    precision: str = "float32"


def torch_forward(model: nn.Module) -> Forward:
    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            outputs: np.ndarray = model(torch.from_numpy(x)).numpy()
            return outputs

    return forward


def torchscript_forward(model: nn.Module, num_features: int) -> Forward:
    """The model traced to TorchScript and frozen (its weights folded in as constants).
    Raises when it does not trace."""
    with warnings.catch_warnings():
        # TorchScript is deprecated for torch.export and torch.compile, which take seconds
        # to compile these networks where tracing takes milliseconds.
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(model.eval(), torch.zeros(1, num_features)))
    return torch_forward(traced)


def onnx_bytes(model: nn.Module, num_features: int) -> bytes:
    """The model as an ONNX graph taking any number of rows. Raises when it does not export."""
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
    return exported.getvalue()


def checked_onnx(model: nn.Module, num_features: int) -> bytes | None:
    """The model's ONNX graph, if it exports and answers as torch does on probe rows within
    EXPORT_TOLERANCE; None otherwise (said in the log)."""
    try:
        graph = onnx_bytes(model, num_features)
        probe = _probe_rows(num_features)
        exported = session_forward(graph)(probe)
        difference = float(np.abs(exported - torch_forward(model)(probe)).max())
    except Exception as exc:  # any exporter or runtime failure: no ONNX file, said why
        logger.warning("the model does not export to ONNX (%s)", exc)
        return None
    if difference > EXPORT_TOLERANCE:
        logger.warning("the ONNX export differs from torch by %.2g; not kept", difference)
        return None
    return graph


def onnx_forward(model: nn.Module, num_features: int) -> Forward:
    """The model exported to ONNX in an ONNX Runtime session of one thread, as the server
    runs torch. Raises when the model does not export."""
    return session_forward(onnx_bytes(model, num_features))


def session_forward(graph: bytes) -> Forward:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def forward(x: np.ndarray) -> np.ndarray:
        outputs: np.ndarray = session.run(None, {"rows": x})[0]
        return outputs

    return forward


EXPORTS: dict[str, Callable[[nn.Module, int], Forward]] = {
    "torchscript": torchscript_forward,
    "onnxruntime": onnx_forward,
}


def fastest_runtime(model: nn.Module, num_features: int) -> RuntimeChoice:
    """Torch, or an export of the model (TorchScript, ONNX Runtime) that answers as torch
    does on probe rows and runs a single row faster, measured here."""
    reference = torch_forward(model)
    probe = _probe_rows(num_features)
    expected = reference(probe)
    candidates, differences = {"torch": reference}, {}
    for name, export in EXPORTS.items():
        try:
            forward = export(model, num_features)
            differences[name] = float(np.abs(forward(probe) - expected).max())
        except Exception as exc:  # any exporter or runtime failure: the others serve it
            logger.warning("the model does not run in %s (%s)", name, exc)
            continue
        if differences[name] <= EXPORT_TOLERANCE:
            candidates[name] = forward
        else:
            logger.warning("%s differs from torch by %.2g; not used", name, differences[name])
    timings = {name: _single_row_us(forward, probe[:1]) for name, forward in candidates.items()}
    name = min(timings, key=timings.__getitem__)
    return RuntimeChoice(name, candidates[name], timings, differences)


def int8_runtime(model: nn.Module, num_features: int) -> RuntimeChoice:
    """The model exported to ONNX with its weights dynamically quantized to int8 (activations
    quantized per batch as it runs), served by ONNX Runtime whatever its speed: asked for,
    not chosen. Its difference from torch and the float runtimes' speed are measured beside
    it. Raises when the model does not export or quantize."""
    float_choice = fastest_runtime(model, num_features)
    forward = session_forward(_quantized(onnx_bytes(model, num_features)))
    probe = _probe_rows(num_features)
    difference = float(np.abs(forward(probe) - torch_forward(model)(probe)).max())
    name = "onnxruntime-int8"
    timings = {**float_choice.single_row_us, name: _single_row_us(forward, probe[:1])}
    differences = {**float_choice.differences, name: difference}
    return RuntimeChoice(name, forward, timings, differences, precision="int8")


def _quantized(graph: bytes) -> bytes:
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as scratch:
        source, target = Path(scratch) / "model.onnx", Path(scratch) / "model-int8.onnx"
        source.write_bytes(graph)
        quantize_dynamic(source, target, weight_type=QuantType.QInt8)
        return target.read_bytes()


def prewarm_exports(torchscript: bool = True) -> None:
    """Export a tiny network once, so the exporters' first-use set-up (torch's JIT: about a
    second, the ONNX exporter: a fifth of one) is paid by a fork server, not by every
    server or node forked from it."""
    tiny = nn.Sequential(nn.Linear(2, 2)).eval()
    checked_onnx(tiny, 2)
    if torchscript:
        torchscript_forward(tiny, 2)


def prewarm_onnx() -> None:
    """What a training node needs of `prewarm_exports`: save_model exports to ONNX."""
    prewarm_exports(torchscript=False)


def _probe_rows(num_features: int) -> np.ndarray:
    probe = np.random.default_rng(0).standard_normal((_PROBE_ROWS, num_features))
    return probe.astype(np.float32)


def _single_row_us(forward: Forward, row: np.ndarray) -> float:
    for _ in range(_TIMED_CALLS // 10):  # warm caches and lazy initialisation first
        forward(row)
    samples = []
    for _ in range(_TIMED_CALLS):
        started = time.perf_counter()
        forward(row)
        samples.append(time.perf_counter() - started)
    return float(np.median(samples) * 1e6)
