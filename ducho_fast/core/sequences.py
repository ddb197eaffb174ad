"""Rows of variable length: a sequence output gives each item a float32 `(T, D)` array whose T
varies by item (audio `pooling: none`, Ducho's `(1, T, D)` files).

In flight (session -> shard assembler -> store -> sinks) such rows are a 1-D object array of
`(T, D)` arrays, which numpy concatenates, reorders and indexes like any rows; at rest (a
shard of the pass state) they are their frames stacked, `(sum T, D)`, plus each item's T.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sequences(rows: Sequence[np.ndarray]) -> np.ndarray:
    """`rows` as one object array of length N (never a 3-D array, even when T agree)."""
    out = np.empty(len(rows), dtype=object)
    for index, row in enumerate(rows):
        out[index] = row
    return out


def is_sequences(rows: np.ndarray) -> bool:
    return np.asarray(rows).dtype == object


def pack(rows: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Rows as stored: their frames stacked, float32 `(sum T, D)`, and each row's T."""
    arrays = [np.asarray(row, dtype=np.float32) for row in rows]
    frames = [len(array) for array in arrays]
    if not arrays:
        return np.empty((0, 0), np.float32), frames
    return np.ascontiguousarray(np.concatenate(arrays), dtype=np.float32), frames


def offsets(frames: Sequence[int]) -> np.ndarray:
    """Where each row starts in the stacked frames (and, last, where they end)."""
    return np.concatenate([[0], np.cumsum(np.asarray(frames, np.int64))])


def unpack(values: np.ndarray, frames: Sequence[int]) -> np.ndarray:
    """Stacked frames back as rows (views of `values`)."""
    starts = offsets(frames)
    return sequences([values[starts[i] : starts[i + 1]] for i in range(len(frames))])
