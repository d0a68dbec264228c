"""CSV and Parquet files, read as Arrow record batches: one batch in memory at a time while a
file is checked, every batch when it is loaded for training."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from shared.dataset_files.schema import (
    MAX_CATEGORIES,
    MAX_FEATURES,
    PREVIEW_ROWS,
    TARGET_NAMES,
    DatasetFileError,
    DatasetSchema,
    Format,
    Task,
)
from shared.dataset_files.tally import FeatureTally, TargetTally, encode_targets

Opener = Callable[[], IO[bytes]]
_CSV_BLOCK_BYTES = 1 << 20
_PARQUET_BATCH_ROWS = 65_536
_OTHER_DELIMITERS = (";", "\t", "|", ":")
_PREVIEW_COLUMNS = 50
_CONVERSION_ERROR = re.compile(r"In CSV column #(\d+): CSV conversion error")


def inspect_table(
    open_file: Opener,
    fmt: Format,
    *,
    target: str | None,
    task: Task | None,
    features: Sequence[str] | None,
    categorical: Sequence[str] | None,
    delimiter: str,
) -> DatasetSchema:
    """Check a CSV or Parquet file batch by batch and infer its schema; DatasetFileError says
    what is wrong and where."""
    names, header = _columns(open_file, fmt, delimiter)
    target = _target_column(names, header, target, delimiter)
    features = _feature_columns(names, target, features)
    coded = _categorical_columns(features, categorical)
    numeric = [name for name in features if name not in coded]
    feature_tally, target_tally = FeatureTally(numeric), TargetTally(target)
    tallies = {name: CategoryTally(name) for name in coded}
    preview: list[dict[str, Any]] = []
    for batch in _batches(open_file, fmt, features, target, delimiter, coded):
        if not preview:
            shown = [*features[: _PREVIEW_COLUMNS - 1], target]
            preview = batch.select(shown).slice(0, PREVIEW_ROWS).to_pylist()
        feature_tally.add(_feature_block(batch, numeric, {}))
        for name, tally in tallies.items():
            tally.add(batch.column(name))
        target_tally.add(*_target_values(batch.column(target)))
    feature_tally.check_finite()
    categories = {name: tally.categories() for name, tally in tallies.items()}
    task, class_names, class_counts = target_tally.conclude(task)
    statistics = feature_tally.statistics()
    if task == "regression":
        statistics += target_tally.moments.statistics()
    return DatasetSchema(
        format=fmt,
        rows=target_tally.rows,
        features=features,
        target=target,
        task=task,
        class_names=class_names,
        class_counts=class_counts,
        categories=categories,
        delimiter=delimiter if fmt == "csv" else None,
        statistics=statistics,
        preview=preview,
    )


def read_table(open_file: Opener, schema: DatasetSchema) -> tuple[np.ndarray, np.ndarray]:
    """Every row of a checked file: features (rows, features) float64, encoded targets."""
    blocks, targets = [], []
    delimiter = schema.delimiter or ","
    coded = list(schema.categories)
    batches = _batches(open_file, schema.format, schema.features, schema.target, delimiter, coded)
    for batch in batches:
        blocks.append(_feature_block(batch, schema.features, schema.categories))
        targets.append(_target_values(batch.column(schema.target))[0])
    x = np.concatenate(blocks) if blocks else np.zeros((0, len(schema.features)))
    y = encode_targets(np.concatenate(targets), schema.task, schema.class_names)
    return x, y


def _columns(open_file: Opener, fmt: Format, delimiter: str) -> tuple[list[str], str]:
    """The file's column names, and its first line (CSV) for explaining a wrong delimiter."""
    if fmt == "parquet":
        with open_file() as f:
            try:
                return list(pq.ParquetFile(f).schema_arrow.names), ""
            except (pa.ArrowException, OSError) as exc:
                raise DatasetFileError(f"not a readable Parquet file: {exc}") from exc
    with open_file() as f:
        header = f.readline(64 * 1024).decode("utf-8", errors="replace").rstrip("\r\n")
    try:
        with open_file() as f:
            reader = pcsv.open_csv(f, **_csv_options(delimiter))
            return list(reader.schema.names), header
    except pa.ArrowException as exc:
        raise DatasetFileError(f"not a readable CSV file: {_arrow_message(exc)}", row=1) from exc


def _target_column(names: list[str], header: str, target: str | None, delimiter: str) -> str:
    if len(names) < 2:
        hint = next((d for d in _OTHER_DELIMITERS if d in header), None)
        if hint is not None:
            raise DatasetFileError(
                f"the header has one column with delimiter {delimiter!r}, but it looks "
                f"{hint!r}-separated: upload it with delimiter={hint!r}",
                row=0,
            )
        raise DatasetFileError("the file has one column; it needs features and a target", row=0)
    if target is not None:
        if target not in names:
            raise DatasetFileError(
                f"no target column {target!r}; the columns are: {_shown(names)}", column=target
            )
        return target
    lowered = {name.lower(): name for name in names}
    return next((lowered[t] for t in TARGET_NAMES if t in lowered), names[-1])


def _feature_columns(names: list[str], target: str, features: Sequence[str] | None) -> list[str]:
    if features is None:
        chosen = [name for name in names if name != target]
    else:
        unknown = [name for name in features if name not in names]
        if unknown:
            raise DatasetFileError(
                f"no feature column(s) {_shown(unknown)}; the columns are: {_shown(names)}",
                column=unknown[0],
            )
        if target in features:
            raise DatasetFileError(f"the target {target!r} cannot also be a feature", column=target)
        chosen = list(dict.fromkeys(features))
    if not chosen:
        raise DatasetFileError("no feature columns besides the target")
    if len(chosen) > MAX_FEATURES:
        raise DatasetFileError(f"{len(chosen)} feature columns; at most {MAX_FEATURES}")
    return chosen


def _categorical_columns(features: list[str], categorical: Sequence[str] | None) -> list[str]:
    chosen = list(dict.fromkeys(categorical or ()))
    unknown = [name for name in chosen if name not in features]
    if unknown:
        raise DatasetFileError(
            f"categorical column(s) {_shown(unknown)} are not feature columns; the features "
            f"are: {_shown(features)}",
            column=unknown[0],
        )
    return chosen


def _batches(
    open_file: Opener,
    fmt: Format,
    features: list[str],
    target: str,
    delimiter: str,
    categorical: list[str],
) -> Iterator[pa.RecordBatch]:
    """The file's batches with the numeric features as float64 and the categorical ones as
    text (missing values as null)."""
    columns = [*features, target]
    numeric = [name for name in features if name not in categorical]
    with open_file() as f:
        if fmt == "parquet":
            parquet = pq.ParquetFile(f)
            _refuse_text_features(parquet, numeric)
            yield from parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns)
            return
        options = pcsv.ConvertOptions(
            column_types=dict.fromkeys(numeric, pa.float64())
            | dict.fromkeys(categorical, pa.string()),
            include_columns=columns,
            strings_can_be_null=True,
        )
        try:
            # Opening reads the first block already, so it can fail like any later one.
            reader = pcsv.open_csv(f, **_csv_options(delimiter), convert_options=options)
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                yield batch
        except pa.ArrowInvalid as exc:
            raise _explain_csv_error(open_file, delimiter, exc, target) from exc


def _refuse_text_features(parquet: pq.ParquetFile, features: list[str]) -> None:
    schema = parquet.schema_arrow
    for name in features:
        kind = schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)) and not (
            pa.types.is_boolean(kind) or pa.types.is_null(kind)
        ):
            batches = parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=[name])
            found = _first_non_numeric(pc.cast(b.column(0), pa.string()) for b in batches)
            raise _non_numeric(name, found, kind=str(kind))


def _explain_csv_error(
    open_file: Opener, delimiter: str, exc: pa.ArrowInvalid, target: str
) -> Exception:
    """pyarrow names the column of a value that is not a number but not its row: find it."""
    match = _CONVERSION_ERROR.search(str(exc))
    if match is None:
        return DatasetFileError(f"not a readable CSV file: {_arrow_message(exc)}")
    with open_file() as f:
        names = pcsv.open_csv(f, **_csv_options(delimiter)).schema.names
    name = names[int(match.group(1))]
    with open_file() as f:
        reader = pcsv.open_csv(
            f,
            **_csv_options(delimiter),
            convert_options=pcsv.ConvertOptions(
                column_types={name: pa.string()}, include_columns=[name]
            ),
        )
        found = _first_non_numeric(batch.column(0) for batch in reader)
    if name == target and found is not None:
        row, value = found
        return DatasetFileError(
            f"the target column {name!r} mixes numbers and text; {value!r} at row {row}",
            row=row,
            column=name,
            value=value,
        )
    return _non_numeric(name, found)


def _first_non_numeric(columns: Iterator[pa.Array]) -> tuple[int, str] | None:
    row = 0
    for column in columns:
        for value in column.to_pylist():
            row += 1
            if value is None or value == "":
                continue
            try:
                float(value)
            except ValueError:
                return row, value
    return None


def _non_numeric(name: str, found: tuple[int, str] | None, kind: str = "text") -> Exception:
    row, value = found if found is not None else (None, None)
    where = f"; the first is {value!r} at row {row}" if found is not None else ""
    return DatasetFileError(
        f"feature column {name!r} is not numeric ({kind}){where}: declare it with "
        "`categorical` (the network embeds it), encode it as numbers, or leave it out with "
        "`features`",
        row=row,
        column=name,
        value=value,
    )


def _feature_block(
    batch: pa.RecordBatch, features: list[str], categories: dict[str, list[str]]
) -> np.ndarray:
    """The features as float64 columns; a categorical one as its values' codes (the index in
    its sorted categories)."""
    columns = [
        _codes(batch.column(name), categories[name])
        if name in categories
        else pc.cast(batch.column(name), pa.float64()).to_numpy(zero_copy_only=False)
        for name in features
    ]
    return np.column_stack(columns) if columns else np.zeros((batch.num_rows, 0))


def _codes(column: pa.Array, categories: list[str]) -> np.ndarray:
    found = pc.index_in(pc.cast(column, pa.string()), value_set=pa.array(categories))
    return pc.cast(found, pa.float64()).to_numpy(zero_copy_only=False)


class CategoryTally:
    """The distinct values of a categorical column, and where a missing one is."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: set[str] = set()
        self.rows = self.missing = 0
        self.first_missing: int | None = None

    def add(self, column: pa.Array) -> None:
        text = pc.cast(column, pa.string())
        # Empty or null: comparing a null gives null, which counts as missing too.
        missing = pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False)
        if missing.any():
            self.missing += int(missing.sum())
            if self.first_missing is None:
                self.first_missing = self.rows + int(np.argmax(missing)) + 1
        self.values.update(v for v in pc.unique(text).to_pylist() if v)
        self.rows += len(column)
        if len(self.values) > MAX_CATEGORIES:
            raise DatasetFileError(
                f"categorical column {self.name!r} has more than {MAX_CATEGORIES} distinct "
                "values; too many to embed",
                column=self.name,
            )

    def categories(self) -> list[str]:
        if self.missing:
            raise DatasetFileError(
                f"categorical column {self.name!r} has {self.missing} missing value(s); the "
                f"first at row {self.first_missing}: give them a category of their own",
                row=self.first_missing,
                column=self.name,
                count=self.missing,
            )
        return sorted(self.values)


def _target_values(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    missing = column.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return column.fill_null("").to_numpy(zero_copy_only=False).astype(str), missing
    if pa.types.is_null(column.type):
        return np.zeros(len(column)), missing
    if missing.any():
        column = column.fill_null(0)
    return column.to_numpy(zero_copy_only=False), missing


def _csv_options(delimiter: str) -> dict[str, Any]:
    return {
        "read_options": pcsv.ReadOptions(block_size=_CSV_BLOCK_BYTES),
        "parse_options": pcsv.ParseOptions(delimiter=delimiter),
    }


def _arrow_message(exc: pa.ArrowException) -> str:
    return str(exc).splitlines()[0]


def _shown(names: Sequence[str]) -> str:
    listed = ", ".join(repr(n) for n in names[:20])
    return listed + (f" and {len(names) - 20} more" if len(names) > 20 else "")
