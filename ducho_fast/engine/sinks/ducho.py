"""Ducho's layout: one float32 `(1, D)` `.npy` per item (a feature map `(1, C, H, W)`, an
audio frame sequence `(1, T, D)`, as Ducho saves them), written as each shard commits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ducho_fast.core.io import atomic_bytes, npy_bytes
from ducho_fast.core.sequences import is_sequences
from ducho_fast.engine.sinks.base import ReadShards


def item_file(folder: Path, item_id: str) -> Path:
    return folder / f"{item_id}.npy"


def item_array(rows: np.ndarray, row: int) -> np.ndarray:
    """One item's float32 array with Ducho's leading 1: `(1, D)`, `(1, C, H, W)`, or, from a
    sequence output's rows (`core.sequences`), `(1, T, D)`."""
    if is_sequences(rows):
        return np.asarray(rows[row], dtype=np.float32)[None]
    return np.asarray(rows[row : row + 1], dtype=np.float32)


def write_per_item(folder: Path, ids: Sequence[str], array: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for row, item_id in enumerate(ids):
        atomic_bytes(item_file(folder, item_id), npy_bytes(item_array(array, row)))


class DuchoSink:
    name = "ducho"
    layout = "ducho"
    sequences = True  # a file per item holds any shape

    def write_shard(self, folder: Path, ids: Sequence[str], features: np.ndarray) -> None:
        write_per_item(folder, ids, features)

    def finalize(
        self, folder: Path, ids: Sequence[str], read_shards: ReadShards, manifest: dict, fp16: bool
    ) -> None:
        """Items are written as their shard commits; here any live item whose file is
        missing (the folder was deleted, this sink was added on a rerun, a killed commit's
        files were removed) is written from the engine's copy, so a rerun never leaves
        Ducho's layout short."""
        folder.mkdir(parents=True, exist_ok=True)
        offset = 0
        for block in read_shards():
            block_ids = ids[offset : offset + len(block)]
            offset += len(block)
            missing = [
                i for i, item in enumerate(block_ids) if not item_file(folder, item).exists()
            ]
            if missing:
                rows = np.asarray(block)[missing]
                write_per_item(folder, [block_ids[i] for i in missing], rows)

    def discard(self, folder: Path, ids: Sequence[str]) -> None:
        for item_id in ids:
            item_file(folder, item_id).unlink(missing_ok=True)
