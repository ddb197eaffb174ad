"""Encoded images held in a Parquet table's cells (a Hugging Face dataset's `image` column,
a catalogue export) instead of files, and tables read through fsspec URLs (`s3://`, `gs://`).

A cell is read by its row, forward, a few rows at a time: a process keeps one small batch of
one column in memory (not the row group, which a writer may have made gigabytes large), so a
50 GB table is never loaded at once. Decoders ask for the rows of their batch in order, so
each reader mostly moves forward; a jump back, or into a later row group, restarts it at the
row group holding the row (Parquet reads a row group's pages in order: within a group the
rows before are read and dropped, so tables with row groups of a few hundred rows, as
Hugging Face writes image datasets, read best).
`pyarrow` (and `fsspec` for URLs) are imported only when a table is read.
"""

from __future__ import annotations

import bisect
import os
import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.records import Blob

READ_ROWS = 16  # cells a reader holds at once (per decode process)
READ_BUFFER = 1 << 20  # bytes pyarrow reads ahead from the file
OPEN_READERS = 2  # tables a process keeps open
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
INSTALL = "pip install ducho-fast[parquet]"


def is_url(location: str) -> bool:
    """An fsspec URL (`s3://b/x.parquet`, `gs://...`, `file:///...`, `memory://...`), as
    opposed to a local path."""
    return bool(URL.match(location))


def open_url(location: str) -> Any:
    """An fsspec URL opened for reading; a missing filesystem package (s3fs, gcsfs) or a
    missing file is one line naming the location."""
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"{location}: reading URLs needs fsspec: {INSTALL}") from None
    try:
        filesystem, path = fsspec.core.url_to_fs(location)
        return filesystem.open(path, "rb")
    except ImportError as exc:  # fsspec names the package the scheme needs (s3fs, gcsfs)
        raise ConfigError(f"{location}: {exc}") from None
    except FileNotFoundError:
        raise ConfigError(f"input file {location} does not exist") from None


def parquet_file(location: str) -> Any:
    """`pyarrow.parquet.ParquetFile` over a path or URL, streaming (bounded read-ahead)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{location}: reading Parquet needs pyarrow: {INSTALL}") from None
    if is_url(location):
        source = open_url(location)
    elif os.path.isfile(location):
        source = location  # pyarrow's own reader (positional reads)
    else:
        raise ConfigError(f"input file {location} does not exist")
    try:
        return pq.ParquetFile(source, buffer_size=READ_BUFFER)
    except Exception as exc:  # a damaged or non-Parquet file: say which, and why
        if not isinstance(source, str):
            source.close()
        raise ConfigError(f"{location} is not a readable Parquet file: {exc}") from None


def cell_bytes(value: Any) -> tuple[bytes | None, str | None]:
    """A cell's encoded image and, when it has none, why: a binary cell, or Hugging Face's
    image struct `{bytes, path}`."""
    if isinstance(value, dict):  # Hugging Face datasets' Image feature
        data, path = value.get("bytes"), value.get("path")
        if data is None:
            where = f" (only a path, {path!r}: give the images as files)" if path else ""
            return None, f"no image bytes in the row{where}"
        value = data
    if value is None:
        return None, "no image bytes in the row (null)"
    if not isinstance(value, bytes | bytearray):
        return None, f"the image column holds {type(value).__name__}, not bytes"
    if not value:
        return None, "empty image bytes"
    return bytes(value), None


def is_image_type(kind: Any) -> bool:
    """A column that can hold encoded images: binary, or a struct with a binary `bytes`."""
    import pyarrow as pa

    binary = (pa.types.is_binary, pa.types.is_large_binary, pa.types.is_binary_view)
    if any(test(kind) for test in binary):
        return True
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        return any(test(kind.field("bytes").type) for test in binary)
    return False


class BlobReader:
    """One column of one table, cell by row, read forward in batches of `READ_ROWS`."""

    def __init__(self, table: str, column: str):
        self.file = parquet_file(table)
        self.column = column
        self.pid = os.getpid()  # a forked decoder opens its own (an inherited handle's
        # position would be shared with its siblings)
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.batches: Iterator[Any] | None = None
        self.first, self.values, self.group = 0, [], 0  # rows held: first, first + 1, ...
        self.next_row = 0  # the first row of the next batch from `batches`

    def cell(self, row: int) -> Any:
        if not self.first <= row < self.first + len(self.values):
            if self.batches is None or row < self.first or self.group_of(row) != self.group:
                self.restart(row)
            while not self.first <= row < self.first + len(self.values):
                self.advance(row)
        return self.values[row - self.first]

    def group_of(self, row: int) -> int:
        return max(bisect.bisect_right(self.starts, row) - 1, 0)

    def restart(self, row: int) -> None:
        group = self.group_of(row)
        self.batches = self.file.iter_batches(
            batch_size=READ_ROWS,
            row_groups=range(group, self.file.num_row_groups),
            columns=[self.column],
            use_threads=False,
        )
        self.first, self.values, self.next_row = self.starts[group], [], self.starts[group]
        self.group = group  # the row group holding the next batch's first row

    def advance(self, row: int) -> None:
        assert self.batches is not None
        batch = next(self.batches, None)
        if batch is None:
            raise IndexError(f"row {row} is past the end of the table")
        self.first, self.next_row = self.next_row, self.next_row + batch.num_rows
        self.group = self.group_of(self.first)
        self.values = batch.column(0).to_pylist() if self.next_row > row else []


_readers: OrderedDict[tuple[str, str], BlobReader] = OrderedDict()


def blob_bytes(blob: Blob) -> bytes:
    """The cell's encoded bytes, through this process's reader of its table."""
    key = (blob.table, blob.column)
    reader = _readers.pop(key, None)
    if reader is None or reader.pid != os.getpid():
        reader = BlobReader(blob.table, blob.column)
    _readers[key] = reader
    while len(_readers) > OPEN_READERS:
        _, oldest = _readers.popitem(last=False)
        if oldest.pid == os.getpid():
            oldest.file.close()
    data, problem = cell_bytes(reader.cell(blob.row))
    if data is None:
        raise ValueError(problem)
    return data
