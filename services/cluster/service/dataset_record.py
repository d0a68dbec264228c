"""`neural/configs/dataset.json`: what a workflow trains on and how its rows are prepared —
the source, the columns, the seeded splits, the scaling — as the generated train.py reads it
to reproduce the run."""

from __future__ import annotations

from typing import Any

from shared.spec import TEST_FRACTION, VAL_FRACTION, WorkflowSpec, is_stored_dataset
from shared.synthetic import is_synthetic


def dataset_config(spec: WorkflowSpec) -> dict[str, Any]:
    """Blocking (it reads the dataset): run it in a thread."""
    # Imported here: it loads scikit-learn, which only setting up a workflow needs.
    from shared.ml.data import describe_dataset

    described = describe_dataset(spec.dataset)
    classification = described["task"] == "classification"
    return {
        **described,
        **_source(spec.dataset),
        "split_seed": spec.training.seed,
        "val_fraction": VAL_FRACTION,
        "test_fraction": TEST_FRACTION,
        "split": "stratified by class" if classification else "seeded shuffle",
        "preprocessing": {
            "features": "standardized by the train split's mean and std (a column constant "
            "on train keeps std 1); a served model applies the same to the rows it gets",
            "target": "class index in class_names order"
            if classification
            else "standardized by the train split's mean and std; predictions are mapped back",
            "categorical": "not encoded: a non-numeric feature column is refused at upload",
        },
    }


def _source(name: str) -> dict[str, Any]:
    if is_stored_dataset(name):
        from shared.dataset_files.store import read_schema

        schema = read_schema(name)
        return {
            "source": "upload",
            "format": schema.format,
            "sha256": schema.sha256,
            "feature_columns": schema.features if schema.format != "npz" else None,
            "target_column": schema.target,
            "input_shape": schema.input_shape,
        }
    if is_synthetic(name):
        return {"source": "generated, seeded by its name"}
    return {"source": "scikit-learn, bundled"}
