"""Parquet tables as sources: texts (`input_path: items.parquet`, beside TSV and CSV) and
encoded images (engine/image_table.py).

A text table's rows become the same `Row`s a TSV gives (values as strings: ids keep their
digits, nulls are empty), so listing, fingerprints and failures work unchanged; a row is named
by its 1-based row number where a TSV names its line. Tables are read in batches of rows; a
table may be a local path or an fsspec URL (`s3://`, `gs://`, `file://`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ducho_fast.core.blobs import is_url, parquet_file
from ducho_fast.core.errors import ConfigError

PARQUET_SUFFIXES = (".parquet", ".pq")
LIST_ROWS = 256  # rows (with their image bytes) held at once while listing


def is_parquet(path: Path | str) -> bool:
    return Path(str(path)).suffix.lower() in PARQUET_SUFFIXES


def table_batches(location: str, columns: Sequence[str]) -> Iterator[Any]:
    """The table's rows as Arrow record batches of `LIST_ROWS`, only `columns`."""
    table = parquet_file(location)
    try:
        yield from table.iter_batches(batch_size=LIST_ROWS, columns=list(columns))
    except Exception as exc:  # a damaged file: name it rather than crash in pyarrow
        raise ConfigError(f"{location} is not a readable Parquet file: {exc}") from None
    finally:
        table.close()


def parquet_columns(location: str) -> list[str]:
    table = parquet_file(location)
    try:
        return list(table.schema_arrow.names)
    finally:
        table.close()


def read_parquet_rows(location: Path | str) -> tuple[list[str], list[dict[str, str]]]:
    """The table's column names and its rows as strings (row i is the i-th, from 0)."""
    location = str(location)
    columns = parquet_columns(location)
    rows: list[dict[str, str]] = []
    for batch in table_batches(location, columns):
        values = {name: [text(v) for v in batch.column(name).to_pylist()] for name in columns}
        rows += [{name: values[name][i] for name in columns} for i in range(batch.num_rows)]
    return columns, rows


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def input_location(dataset: Path, value: str) -> Path | str:
    """A source's `input_path`: an fsspec URL as it is, else a path in the dataset folder."""
    return value if is_url(value) else dataset / value
