"""The standard inference protocols a served model speaks beside `POST /predict`:

- KServe v1 (TF-Serving's body): `POST /v1/models/{name}:predict` with `{"instances": rows}`,
  answered `{"predictions": [...]}` (a class index, or a value, per row);
- the Open Inference Protocol (KServe v2, Triton's HTTP API):
  `POST /v2/models/{name}/infer` with named, shaped, typed tensors, in JSON or with the
  binary tensor extension Triton's clients use by default, answered in JSON.

Each turns its body into rows for the model, or says what is wrong and where.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.deployer.model_server.schemas import MAX_ROWS, Feature
from shared.errors import describe_validation_errors
from shared.ml.predictor import PredictionResult, RegressionResult

INPUT_NAME = "rows"
# Numbers a tensor may carry, and how they lie in a binary tensor (little-endian).
NUMERIC_DATATYPES: dict[str, str] = {
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
BINARY_HEADER = "inference-header-content-length"


class ProtocolError(Exception):
    """A request the protocol refuses; `detail` names each problem's field."""

    def __init__(self, message: str, detail: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.detail = detail or [{"field": "body", "message": message}]


def _invalid(exc: ValidationError) -> ProtocolError:
    detail = describe_validation_errors([dict(e) for e in exc.errors()])
    return ProtocolError("; ".join(f"{d['field']}: {d['message']}" for d in detail), detail)


class InstancesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[list[Feature]] = Field(min_length=1, max_length=MAX_ROWS)


def rows_from_instances(body: bytes) -> list[list[float]]:
    try:
        return InstancesRequest.model_validate_json(body).instances
    except ValidationError as exc:
        raise _invalid(exc) from None


def v1_answer(result: PredictionResult | RegressionResult) -> dict[str, Any]:
    if isinstance(result, RegressionResult):
        return {"predictions": result.values}
    return {"predictions": result.classes}


class TensorParameters(BaseModel):
    binary_data_size: int | None = Field(default=None, ge=0)


class InferInput(BaseModel):
    name: str
    shape: list[int] = Field(min_length=1, max_length=8)
    datatype: str
    parameters: TensorParameters | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = Field(default=None, max_length=4)


class InferCall(BaseModel):
    """A parsed infer request: the rows it asks about and what it wants back."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str | None
    rows: np.ndarray
    outputs: list[str] | None


def parse_infer(body: bytes, json_length: str | None, num_features: int) -> InferCall:
    """The rows of an OIP infer request: one input, `rows`, of shape [n, num_features] and
    a numeric datatype, its data in JSON or (binary tensor extension) after the JSON."""
    header, binary = body, b""
    if json_length is not None:
        try:
            length = int(json_length)
        except ValueError:
            raise ProtocolError(f"{BINARY_HEADER} is not a number: {json_length!r}") from None
        if not 0 < length <= len(body):
            raise ProtocolError(f"{BINARY_HEADER} {length} does not fit a {len(body)}-byte body")
        header, binary = body[:length], body[length:]
    try:
        request = InferRequest.model_validate_json(header)
    except ValidationError as exc:
        raise _invalid(exc) from None
    (tensor,) = request.inputs
    field = "inputs.0"
    if tensor.name != INPUT_NAME:
        raise ProtocolError(
            f"{field}.name: the model's input is {INPUT_NAME!r}, not {tensor.name!r}"
        )
    dtype = NUMERIC_DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise ProtocolError(
            f"{field}.datatype: {tensor.datatype!r} is not a number type; "
            f"one of {', '.join(NUMERIC_DATATYPES)}"
        )
    expected = f"[n, {num_features}] with 1 <= n <= {MAX_ROWS}"
    if (
        len(tensor.shape) != 2
        or tensor.shape[1] != num_features
        or not 1 <= tensor.shape[0] <= MAX_ROWS
    ):
        raise ProtocolError(f"{field}.shape: {tensor.shape} is not {expected}")
    count = tensor.shape[0] * num_features
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    if size is not None:
        if tensor.data is not None:
            raise ProtocolError(f"{field}: data given both in JSON and in binary")
        if size != len(binary) or size != count * np.dtype(dtype).itemsize:
            raise ProtocolError(
                f"{field}.parameters.binary_data_size: {size} bytes, but the body carries "
                f"{len(binary)} and a {tensor.datatype} tensor of shape {tensor.shape} takes "
                f"{count * np.dtype(dtype).itemsize}"
            )
        values = np.frombuffer(binary, dtype=dtype)
    else:
        if tensor.data is None:
            raise ProtocolError(f"{field}.data: missing (and no binary data)")
        try:
            values = np.asarray(tensor.data, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ProtocolError(f"{field}.data: not an array of numbers") from None
        if values.size != count:
            raise ProtocolError(
                f"{field}.data: {values.size} values, but shape {tensor.shape} takes {count}"
            )
    outputs = [o.name for o in request.outputs] if request.outputs else None
    return InferCall(
        id=request.id, rows=values.astype(np.float64).reshape(-1, num_features), outputs=outputs
    )


def output_tensors(result: PredictionResult | RegressionResult) -> dict[str, dict[str, Any]]:
    """The model's outputs as OIP tensors, by name."""
    if isinstance(result, RegressionResult):
        values = result.values
        return {"predictions": {"datatype": "FP64", "shape": [len(values)], "data": values}}
    rows = len(result.classes)
    classes = len(result.probabilities[0]) if rows else 0
    return {
        "predictions": {"datatype": "INT64", "shape": [rows], "data": result.classes},
        "probabilities": {
            "datatype": "FP32",
            "shape": [rows, classes],
            "data": [p for row in result.probabilities for p in row],
        },
    }


def v2_answer(
    call: InferCall, result: PredictionResult | RegressionResult, name: str, version: str
) -> dict[str, Any]:
    tensors = output_tensors(result)
    wanted = call.outputs or list(tensors)
    unknown = [n for n in wanted if n not in tensors]
    if unknown:
        raise ProtocolError(
            f"outputs: no output named {unknown[0]!r}; the model has {list(tensors)}"
        )
    answer: dict[str, Any] = {
        "model_name": name,
        "model_version": version,
        "outputs": [{"name": n, **tensors[n]} for n in wanted],
    }
    if call.id is not None:
        answer["id"] = call.id
    return answer


def model_metadata(
    name: str,
    version: str,
    num_features: int,
    task: str,
    classes: int,
) -> dict[str, Any]:
    """`GET /v2/models/{name}`: the model's input and outputs as OIP tensors."""
    if task == "regression":
        outputs = [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]
    else:
        outputs = [
            {"name": "predictions", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, classes]},
        ]
    return {
        "name": name,
        "versions": [version],
        "platform": "nexus",
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, num_features]}],
        "outputs": outputs,
    }
