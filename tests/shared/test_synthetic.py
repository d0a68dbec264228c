"""Synthetic datasets are named by their knobs: the name is validated with the knob that is
wrong named, canonicalized, and regenerates the same rows wherever it is loaded."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from shared.ml.data import describe_dataset, load_splits
from shared.spec import WorkflowSpec, dataset_shape
from shared.synthetic import parse_synthetic

NAME = "synthetic_classification?rows=600&features=12&classes=3&seed=5"


def test_a_synthetic_name_regenerates_the_same_rows_of_its_size() -> None:
    described = describe_dataset(NAME)
    assert (described["samples"], described["features"], described["classes"]) == (600, 12, 3)
    assert dataset_shape(NAME)[:4] == (600, 12, 3, "classification")
    first, again = load_splits(NAME, seed=1), load_splits(NAME, seed=1)
    assert np.array_equal(first.x_train, again.x_train)
    other = load_splits(NAME.replace("seed=5", "seed=6"), seed=1)
    assert not np.array_equal(first.x_train, other.x_train)
    assert first.class_names == ["class_0", "class_1", "class_2"]
    # Stratified like the bundled sets: every class in every split.
    assert set(first.y_val.tolist()) == set(first.y_test.tolist()) == {0, 1, 2}


def test_the_spec_keeps_a_canonical_name() -> None:
    spec = WorkflowSpec.model_validate(
        {"name": "s", "dataset": "synthetic_classification?seed=0&classes=4&rows=2000"}
    )
    assert spec.dataset == "synthetic_classification"  # every knob at its default
    assert parse_synthetic(NAME).name == NAME


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("synthetic_classification?colour=red", "unknown knob 'colour'"),
        ("synthetic_classification?rows=many", "rows must be an integer from 50 to 1000000"),
        ("synthetic_classification?rows=10", "rows must be an integer from 50"),
        ("synthetic_classification?rows=1000000&features=1000", "at most 50,000,000 values"),
        ("synthetic_classification?features=2&classes=10", "2 features cannot separate 10 classes"),
        ("synthetic_classification?rows=100&classes=20", "at least 10 rows per class"),
        ("synthetic_classification?rows", "rows must be an integer"),
        ("synthetic_regressor", "unknown dataset 'synthetic_regressor'"),
        ("synthetic_regression?classes=3", "synthetic_regression: unknown knob 'classes'"),
        ("synthetic_regression?features=1", "features must be an integer from 2 to 1000"),
        ("synthetic_regression?rows=1000000&features=100", "at most 50,000,000 values"),
    ],
)
def test_a_bad_synthetic_name_is_refused_naming_the_knob(name: str, message: str) -> None:
    with pytest.raises(ValidationError) as refused:
        WorkflowSpec.model_validate({"name": "s", "dataset": name})
    assert message in str(refused.value)


REGRESSION_NAME = "synthetic_regression?rows=400&features=6&seed=2"


def test_a_synthetic_regression_name_regenerates_the_same_real_valued_rows() -> None:
    described = describe_dataset(REGRESSION_NAME)
    assert (described["task"], described["samples"], described["features"]) == (
        "regression",
        400,
        6,
    )
    assert dataset_shape(REGRESSION_NAME)[:4] == (400, 6, 0, "regression")
    assert dataset_shape(REGRESSION_NAME).outputs == 1
    first, again = load_splits(REGRESSION_NAME, seed=1), load_splits(REGRESSION_NAME, seed=1)
    assert first.task == "regression" and first.class_names == []
    np.testing.assert_array_equal(first.y_test, again.y_test)
    other = load_splits(REGRESSION_NAME.replace("seed=2", "seed=3"), seed=1)
    assert not np.array_equal(first.x_train, other.x_train)
    # A real-valued target, not a handful of labels.
    assert len(set(first.y_train.tolist())) == len(first.y_train)


def test_a_synthetic_regression_spec_keeps_a_canonical_name() -> None:
    spec = WorkflowSpec.model_validate(
        {"name": "s", "dataset": "synthetic_regression?seed=2&features=6&rows=400"}
    )
    assert spec.dataset == REGRESSION_NAME
    default = WorkflowSpec.model_validate(
        {"name": "s", "dataset": "synthetic_regression?rows=2000&seed=0"}
    )
    assert default.dataset == "synthetic_regression"
