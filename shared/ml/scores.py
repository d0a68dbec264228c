"""A regression model's scores from its predicted and true values: numpy only, so the
deployer's smoke test can judge a served model without importing torch."""

from __future__ import annotations

import numpy as np


def regression_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² of predicted against true values, in the target's own units. A
    constant truth has no variance to explain: its R² is undefined, reported as 0."""
    p = np.asarray(predicted, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape or p.ndim != 1 or len(p) == 0:
        raise ValueError("predicted and true values must be equal-length non-empty 1-D arrays")
    residual = float(((t - p) ** 2).sum())
    total = float(((t - t.mean()) ** 2).sum())
    return {
        "mae": float(np.abs(p - t).mean()),
        "rmse": float(np.sqrt(residual / len(t))),
        "r2": 1.0 - residual / total if total > 0 else 0.0,
    }
