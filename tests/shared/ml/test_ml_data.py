import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from shared.ml.data import (
    BUNDLED_DATASETS,
    DatasetSplits,
    Normalization,
    TargetNormalization,
    UnknownDatasetError,
    describe_dataset,
    load_splits,
)


def test_digits_has_64_features_and_10_classes(digits: DatasetSplits) -> None:
    assert digits.num_features == 64
    assert digits.num_classes == 10
    assert digits.class_names == [str(d) for d in range(10)]
    assert len(digits.x_train) + len(digits.x_val) + len(digits.x_test) == 1797
    for x, y in [(digits.x_train, digits.y_train), (digits.x_val, digits.y_val)]:
        assert x.dtype == np.float32
        assert y.dtype == np.int64
        assert x.shape == (len(y), 64)


def test_normalization_is_fitted_on_the_train_split_only(digits: DatasetSplits) -> None:
    raw = load_digits().data
    norm = digits.normalization
    raw_train = digits.x_train * norm.std + norm.mean
    np.testing.assert_allclose(norm.mean, raw_train.mean(axis=0), atol=1e-4)
    assert not np.allclose(norm.mean, raw.mean(axis=0), atol=1e-4)
    varying = raw_train.std(axis=0) > 1e-6
    np.testing.assert_allclose(digits.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(digits.x_train.std(axis=0)[varying], 1, atol=1e-4)
    # Pixels that are blank in every training image keep std 1, so they are never amplified.
    assert (norm.std[~varying] == 1).all()


def test_splits_are_stratified(digits: DatasetSplits) -> None:
    overall = np.bincount(load_digits().target) / 1797
    for y in (digits.y_train, digits.y_val, digits.y_test):
        np.testing.assert_allclose(np.bincount(y) / len(y), overall, atol=0.01)


def test_splits_are_deterministic_for_a_seed() -> None:
    first, second, other = load_splits("wine"), load_splits("wine"), load_splits("wine", seed=1)
    np.testing.assert_array_equal(first.x_train, second.x_train)
    np.testing.assert_array_equal(first.y_test, second.y_test)
    assert not np.array_equal(first.y_train, other.y_train)


@pytest.mark.parametrize("name", sorted(BUNDLED_DATASETS))
def test_every_bundled_dataset_loads(name: str) -> None:
    splits = load_splits(name)
    described = describe_dataset(name)
    assert splits.num_features == described["features"]
    assert splits.num_classes == described["classes"] == len(splits.class_names)
    assert splits.task == described["task"]
    assert len(splits.y_train) + len(splits.y_val) + len(splits.y_test) == described["samples"]


def test_unknown_dataset_raises() -> None:
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'mnist'"):
        load_splits("mnist")
    with pytest.raises(ValueError, match="digits"):
        describe_dataset("mnist")


@pytest.mark.parametrize(("val", "test"), [(0.0, 0.2), (0.5, 0.5), (0.2, 1.0)])
def test_bad_split_fractions_are_rejected(val: float, test: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        load_splits("iris", val_fraction=val, test_fraction=test)


def test_describe_dataset_digits() -> None:
    assert describe_dataset("digits") | {"class_names": None} == {
        "name": "digits",
        "task": "classification",
        "samples": 1797,
        "features": 64,
        "classes": 10,
        "class_names": None,
    }


def test_normalization_survives_json(digits: DatasetSplits) -> None:
    restored = Normalization.from_dict(json.loads(json.dumps(digits.normalization.to_dict())))
    raw = load_digits().data[:20]
    np.testing.assert_array_equal(restored.apply(raw), digits.normalization.apply(raw))


def test_normalization_rejects_wrong_width_and_bad_stats(digits: DatasetSplits) -> None:
    with pytest.raises(ValueError, match="expected 64 features, got 3"):
        digits.normalization.apply(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="positive std"):
        Normalization.from_dict({"mean": [0.0], "std": [0.0]})


def test_raw_test_rows_are_the_dataset_rows_the_normalized_ones_came_from() -> None:
    from sklearn.datasets import load_iris

    splits = load_splits("iris", seed=3)
    originals = {tuple(row) for row in load_iris().data.tolist()}
    assert all(tuple(row) in originals for row in splits.x_test_raw.tolist())
    np.testing.assert_allclose(
        splits.normalization.apply(splits.x_test_raw), splits.x_test, rtol=0, atol=0
    )


def test_diabetes_is_a_regression_set_split_by_a_seeded_shuffle() -> None:
    from sklearn.datasets import load_diabetes

    splits = load_splits("diabetes", seed=7)
    assert splits.task == "regression"
    assert splits.num_classes == 0 and splits.class_names == []
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (308, 67, 67)
    # The targets stay in their real units (25..346), as floats; the split is a plain seeded
    # shuffle (no classes to stratify by), the same rows for the same seed.
    assert splits.y_train.dtype == np.float32
    truth = set(load_diabetes().target.tolist())
    assert all(float(y) in truth for y in splits.y_test.tolist())
    again, other = load_splits("diabetes", seed=7), load_splits("diabetes", seed=8)
    np.testing.assert_array_equal(splits.y_test, again.y_test)
    assert not np.array_equal(splits.y_test, other.y_test)


def test_a_regression_target_is_standardized_on_the_train_split_only() -> None:
    splits = load_splits("diabetes")
    target = splits.target_normalization
    assert target is not None
    assert target.mean == pytest.approx(float(splits.y_train.astype(np.float64).mean()))
    assert target.std == pytest.approx(float(splits.y_train.astype(np.float64).std()))
    everything = np.concatenate([splits.y_train, splits.y_val, splits.y_test])
    assert target.mean != pytest.approx(float(everything.mean()), abs=1e-6)
    z = target.apply(splits.y_train)
    assert abs(float(z.mean())) < 1e-5 and float(z.std()) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(target.invert(z), splits.y_train, rtol=1e-5)
    restored = TargetNormalization.from_dict(json.loads(json.dumps(target.to_dict())))
    assert restored == target
    with pytest.raises(ValueError, match="positive std"):
        TargetNormalization.from_dict({"mean": 1.0, "std": 0.0})


def test_a_classification_split_has_no_target_normalization(digits: DatasetSplits) -> None:
    assert digits.task == "classification" and digits.target_normalization is None
