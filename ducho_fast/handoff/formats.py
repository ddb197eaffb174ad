"""The hand-off format table: each recommender framework's layout is one module with a
`HandoffFormat` (a name and `write(data, folder) -> files`) plus one `register_format` line
in `ducho_fast/handoff/__init__.py`."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from ducho_fast.core.errors import InputError
from ducho_fast.core.io import atomic_bytes, npy_bytes
from ducho_fast.core.table import Table
from ducho_fast.handoff.data import HandoffData


class HandoffFormat(Protocol):
    name: str

    def write(self, data: HandoffData, folder: Path) -> list[Path]:
        """Write the framework's files into `folder`; return them."""
        ...


FORMATS: Table[HandoffFormat] = Table("hand-off format", "ducho_fast.handoff")
register_format = FORMATS.register
get_format = FORMATS.lookup


def write_rows(path: Path, rows: Iterable[Sequence[object]], header: Sequence[str] = ()) -> Path:
    """A tab-separated file (atomic); a field holding a tab or a newline is refused."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_NONE)
    if header:
        writer.writerow(header)
    for row in rows:
        for value in row:
            if isinstance(value, str) and ("\t" in value or "\n" in value):
                raise InputError(f"id {value!r} holds a tab or a newline; {path.name} cannot")
        writer.writerow(row)
    atomic_bytes(path, buffer.getvalue().encode())
    return path


def write_array(path: Path, array: np.ndarray) -> Path:
    atomic_bytes(path, npy_bytes(np.ascontiguousarray(array, np.float32)))
    return path


def time_of(data: HandoffData, row: int) -> object:
    """A row's time as written: an integer when it is one (unix seconds), else the float."""
    if data.times is None:
        return 0
    value = float(data.times[row])
    return int(value) if value.is_integer() else value
