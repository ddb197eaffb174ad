"""Parquet tables as text sources (`input_path: items.parquet`), beside TSV and CSV.

A catalogue at scale is often a Parquet export rather than a TSV. Its rows become the same
`Row`s a TSV gives (values as strings: ids keep their digits, nulls are empty), so listing,
fingerprints and failures work unchanged; a row is named by its 1-based row number where a
TSV names its line. Local files only here: object-store paths (s3://, gs://) are not read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ducho_fast.core.errors import ConfigError

PARQUET_SUFFIXES = (".parquet", ".pq")


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() in PARQUET_SUFFIXES


def read_parquet_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The table's column names and its rows as strings (row i is the i-th, from 0)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            f"{path}: reading Parquet needs pyarrow: pip install ducho-fast[ray] (or pyarrow)"
        ) from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # a damaged or non-Parquet file: say which, and why
        raise ConfigError(f"{path} is not a readable Parquet file: {exc}") from None
    columns = list(table.column_names)
    values = {name: [text(v) for v in table.column(name).to_pylist()] for name in columns}
    rows = [{name: values[name][i] for name in columns} for i in range(table.num_rows)]
    return columns, rows


def text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)
