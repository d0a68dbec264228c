"""Uploaded dataset files: each format's schema is inferred in one streamed pass, each kind of
bad file is refused saying where, and a checked file reads back as training wants it."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shared.dataset_files import DatasetFileError, inspect_file, read_file


def _opener(path: Path):  # type: ignore[no-untyped-def]
    return functools.partial(path.open, "rb")


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text)
    return path


def _rows(count: int, classes: int = 2) -> str:
    return "".join(f"{i * 0.5},{i % 7},c{i % classes}\n" for i in range(count))


def test_a_csv_schema_names_features_target_classes_and_statistics(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,b,label\n" + _rows(40))
    schema = inspect_file(_opener(path), "csv")
    assert schema.features == ["a", "b"]
    assert schema.target == "label"
    assert schema.task == "classification"
    assert schema.class_names == ["c0", "c1"]
    assert schema.class_counts == [20, 20]
    assert schema.rows == 40
    assert schema.statistics[0].name == "a"
    assert schema.statistics[0].mean == pytest.approx(np.mean([i * 0.5 for i in range(40)]))
    assert schema.statistics[1].max == 6
    assert schema.preview[0] == {"a": 0.0, "b": 0.0, "label": "c0"}
    x, y = read_file(_opener(path), schema)
    assert x.shape == (40, 2) and x.dtype == np.float64
    assert y.tolist() == [i % 2 for i in range(40)]


def test_a_numeric_target_with_many_values_is_a_regression(tmp_path: Path) -> None:
    text = "x1,x2,score\n" + "".join(f"{i},{i * i % 11},{i * 3.5}\n" for i in range(100))
    path = _csv(tmp_path, text)
    schema = inspect_file(_opener(path), "csv")
    assert (schema.task, schema.class_names) == ("regression", [])
    assert schema.statistics[-1].name == "score"
    _, y = read_file(_opener(path), schema)
    assert y.dtype == np.float64 and y[3] == pytest.approx(10.5)
    forced = inspect_file(_opener(path), "csv", task="regression", target="x1")
    assert forced.features == ["x2", "score"]


def test_integer_labels_are_classes_in_numeric_order(tmp_path: Path) -> None:
    text = "f,y\n" + "".join(f"{i},{(i % 3) * 5}\n" for i in range(60))
    path = _csv(tmp_path, text)
    schema = inspect_file(_opener(path), "csv")
    assert schema.class_names == ["0", "5", "10"]
    _, y = read_file(_opener(path), schema)
    assert y[:4].tolist() == [0, 1, 2, 0]


def test_features_may_be_chosen_and_others_are_left_out(tmp_path: Path) -> None:
    path = _csv(tmp_path, "id,a,b,label\n" + "".join(f"r{i},{i},1,c{i % 2}\n" for i in range(40)))
    schema = inspect_file(_opener(path), "csv", features=["a", "b"])
    assert schema.features == ["a", "b"]


def test_a_wrong_delimiter_is_named_with_the_one_to_use(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a;b;label\n" + _rows(40).replace(",", ";"))
    with pytest.raises(DatasetFileError, match="delimiter=';'") as raised:
        inspect_file(_opener(path), "csv")
    assert raised.value.location == {"row": 0}
    assert inspect_file(_opener(path), "csv", delimiter=";").features == ["a", "b"]


def test_a_missing_target_column_lists_the_columns(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,b,label\n" + _rows(40))
    with pytest.raises(DatasetFileError, match="no target column 'kind'.*'a', 'b', 'label'"):
        inspect_file(_opener(path), "csv", target="kind")


def test_a_non_numeric_feature_is_named_with_its_row_and_column(tmp_path: Path) -> None:
    # Far past pyarrow's first block, where column types were already inferred as numbers.
    rows = _rows(60_000) + "abc,1,c0\n" + _rows(20)
    path = _csv(tmp_path, "a,b,label\n" + rows)
    with pytest.raises(DatasetFileError, match="'a' is not numeric.*'abc' at row 60001") as raised:
        inspect_file(_opener(path), "csv")
    assert raised.value.location == {"row": 60001, "column": "a", "value": "abc"}


def test_a_text_column_is_refused_as_not_numeric(tmp_path: Path) -> None:
    text = "colour,b,label\n" + "".join(f"red,{i},c{i % 2}\n" for i in range(40))
    with pytest.raises(DatasetFileError, match="'colour' is not numeric.*'red' at row 1"):
        inspect_file(_opener(_csv(tmp_path, text)), "csv")


def test_nans_and_infs_are_counted_with_the_first_position(tmp_path: Path) -> None:
    rows = _rows(30) + "1.0,,c0\n" + "inf,2,c1\n" + "nan,3,c0\n" + _rows(10)
    path = _csv(tmp_path, "a,b,label\n" + rows)
    with pytest.raises(DatasetFileError, match="3 missing or non-finite.*row 31, column 'b'"):
        inspect_file(_opener(path), "csv")


def test_a_class_with_too_few_rows_is_named(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,b,label\n" + _rows(40) + "1,1,rare\n")
    with pytest.raises(DatasetFileError, match=r"too few rows per class: 'rare' \(1\)"):
        inspect_file(_opener(path), "csv")


def test_a_missing_target_value_and_a_ragged_row_are_refused(tmp_path: Path) -> None:
    path = _csv(tmp_path, "a,b,label\n" + _rows(30) + "1,2,\n")
    with pytest.raises(DatasetFileError, match="target column 'label' has 1 missing.*row 31"):
        inspect_file(_opener(path), "csv")
    path = _csv(tmp_path, "a,b,label\n" + _rows(30) + "1,2\n")
    with pytest.raises(DatasetFileError, match="Expected 3 columns, got 2"):
        inspect_file(_opener(path), "csv")


def test_too_few_rows_and_garbage_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetFileError, match="at least 20"):
        inspect_file(_opener(_csv(tmp_path, "a,b,label\n" + _rows(10))), "csv")
    (tmp_path / "junk").write_bytes(b"\x00\x01not parquet")
    with pytest.raises(DatasetFileError, match="not a readable Parquet file"):
        inspect_file(_opener(tmp_path / "junk"), "parquet")
    with pytest.raises(DatasetFileError, match="not a readable NPZ file"):
        inspect_file(_opener(tmp_path / "junk"), "npz")


def test_a_parquet_file_reads_like_the_csv(tmp_path: Path) -> None:
    table = pa.table({"a": [i * 0.5 for i in range(40)], "b": [i % 7 for i in range(40)]})
    table = table.append_column("label", pa.array([f"c{i % 2}" for i in range(40)]))
    pq.write_table(table, tmp_path / "data.parquet")
    schema = inspect_file(_opener(tmp_path / "data.parquet"), "parquet")
    assert (schema.features, schema.class_names) == (["a", "b"], ["c0", "c1"])
    x, y = read_file(_opener(tmp_path / "data.parquet"), schema)
    assert x[3].tolist() == [1.5, 3.0] and y[3] == 1
    texts = table.append_column("colour", pa.array(["red"] * 40))
    pq.write_table(texts, tmp_path / "text.parquet")
    with pytest.raises(DatasetFileError, match="'colour' is not numeric"):
        inspect_file(_opener(tmp_path / "text.parquet"), "parquet", target="label")


def test_an_image_npz_records_its_input_shape(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images, labels = rng.random((60, 8, 8)), np.arange(60) % 3
    np.savez(tmp_path / "images.npz", images=images, labels=labels)
    schema = inspect_file(_opener(tmp_path / "images.npz"), "npz")
    assert schema.input_shape == [1, 8, 8]
    assert len(schema.features) == 64 and schema.class_names == ["0", "1", "2"]
    assert schema.statistics[0].name == "images"
    x, y = read_file(_opener(tmp_path / "images.npz"), schema)
    assert x.shape == (60, 64) and np.array_equal(x[5], images[5].reshape(-1))
    assert y.tolist() == labels.tolist()


def test_an_npz_split_as_published_is_pooled(tmp_path: Path) -> None:
    train, test = np.zeros((40, 1, 2, 2)), np.ones((20, 1, 2, 2))
    labels = {"y_train": np.arange(40) % 2, "y_test": np.arange(20) % 2}
    np.savez(tmp_path / "mnist.npz", x_train=train, x_test=test, **labels)
    schema = inspect_file(_opener(tmp_path / "mnist.npz"), "npz")
    assert (schema.rows, schema.input_shape, schema.class_counts) == (60, [1, 2, 2], [30, 30])


def test_bad_npz_arrays_are_named(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((30, 4)))
    with pytest.raises(DatasetFileError, match="needs a feature array.*it has: x"):
        inspect_file(_opener(tmp_path / "a.npz"), "npz")
    np.savez(tmp_path / "b.npz", x=np.zeros((30, 4)), y=np.zeros(29))
    with pytest.raises(DatasetFileError, match=r"one label per row of 'x' \(30,\)"):
        inspect_file(_opener(tmp_path / "b.npz"), "npz")
    images = np.ones((30, 2, 4, 4))
    images[7, 1, 2, 3] = np.nan
    np.savez(tmp_path / "c.npz", x=images, y=np.arange(30) % 2)
    with pytest.raises(DatasetFileError, match="1 non-finite pixel.*image 8, pixel 27"):
        inspect_file(_opener(tmp_path / "c.npz"), "npz")
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}] * 30, dtype=object), y=np.arange(30))
    with pytest.raises(DatasetFileError, match="needs pickle"):
        inspect_file(_opener(tmp_path / "d.npz"), "npz")


def test_categorical_columns_are_read_as_codes_of_their_sorted_values(tmp_path: Path) -> None:
    rows = "".join(f"{i},{['red', 'green', 'blue'][i % 3]},c{i % 2}\n" for i in range(40))
    path = _csv(tmp_path, "size,colour,label\n" + rows)
    schema = inspect_file(_opener(path), "csv", categorical=["colour"])
    assert schema.categories == {"colour": ["blue", "green", "red"]}
    assert schema.categorical_columns() == [(1, 3)]
    assert [s.name for s in schema.statistics] == ["size"]
    x, _ = read_file(_opener(path), schema)
    assert x[:3].tolist() == [[0.0, 2.0], [1.0, 1.0], [2.0, 0.0]]
    with pytest.raises(DatasetFileError, match="'shade' are not feature columns"):
        inspect_file(_opener(path), "csv", categorical=["shade"])
    gaps = _csv(tmp_path, "size,colour,label\n" + rows + "1,,c0\n")
    with pytest.raises(DatasetFileError, match="'colour' has 1 missing.*row 41"):
        inspect_file(_opener(gaps), "csv", categorical=["colour"])
