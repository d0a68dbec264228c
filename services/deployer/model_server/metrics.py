"""The served model's own Prometheus metrics, beside the HTTP ones every app has."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ModelMetrics:
    def __init__(self, registry: CollectorRegistry, model_id: str) -> None:
        labels = ["model_id"]
        self.requests = Counter(
            "nexus_model_predictions_total", "Predict requests answered", labels, registry=registry
        ).labels(model_id)
        self.rows = Counter(
            "nexus_model_rows_total", "Rows predicted", labels, registry=registry
        ).labels(model_id)
        self.errors = Counter(
            "nexus_model_rejected_requests_total",
            "Predict requests refused for bad rows",
            labels,
            registry=registry,
        ).labels(model_id)
        self.latency = Histogram(
            "nexus_model_predict_seconds",
            "Time to validate, normalize and predict one request's rows",
            labels,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        ).labels(model_id)
