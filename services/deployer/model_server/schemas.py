"""Request and response bodies of a served model."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

MAX_ROWS = 1000

# What a served model answers; here rather than in app.py so the deployer's web process can
# describe a deployment without importing the model server (and with it, torch).
ENDPOINTS = {
    "predict": "POST /predict",
    "health": "GET /healthz",
    "ready": "GET /readyz",
    "metrics": "GET /metrics",
    "docs": "GET /docs",
    "metadata": "GET /",
}

# Strict: a JSON string or boolean is not a feature value; a non-finite one is refused by name.
Feature = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[list[Feature]] = Field(
        min_length=1,
        max_length=MAX_ROWS,
        description=f"1 to {MAX_ROWS} rows of raw (unnormalized) feature values.",
        examples=[[[0.0, 1.5, 3.0]]],
    )


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI's description of a JSON request body of `model`, for a route that reads and
    validates its body itself."""
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}}
    return {"requestBody": {**schema, "required": True}}


class PredictResponse(BaseModel):
    """A classifier's answer."""

    predictions: list[int] = Field(description="Predicted class index per row.")
    labels: list[str] = Field(description="Predicted class name per row.")
    probabilities: list[list[float]] = Field(description="Per row, one probability per class.")
    model_id: str | None


class RegressionPrediction(BaseModel):
    value: float = Field(description="The predicted target, in the dataset's units.")


class RegressionResponse(BaseModel):
    """A regression model's answer."""

    predictions: list[RegressionPrediction] = Field(description="One value per row.")
    model_id: str | None


class ModelInfo(BaseModel):
    model_id: str | None
    name: str | None
    version: int | None
    format: str
    dataset: str | None
    num_features: int
    task: str = Field(description="classification or regression")
    class_names: list[str] = Field(description="Empty for a regression model.")
    architecture: dict[str, Any]
    parameter_count: int | None
    metrics: dict[str, Any]
    trained_at: str | None
    loaded_at: str
    runtime: str = Field(
        description="What runs the forward pass: torch, torchscript, onnxruntime or "
        "onnxruntime-int8."
    )
    precision: str = Field(description="float32, or int8 (weights quantized).")
    runtime_differences: dict[str, float] = Field(
        description="Each export's largest difference from torch's outputs on probe rows."
    )
    access: str = Field(description="Who may ask for predictions.")
    runtime_single_row_us: dict[str, float] = Field(
        description="Each runtime's single-row forward pass as measured when the server started."
    )
    batching: dict[str, int] = Field(
        description="Rows of concurrent requests run in one pass (max_batch_size 1: off)."
    )
    endpoints: dict[str, str]
