"""Ducho's layout: one float32 `(1, D)` `.npy` per item, written as each shard commits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ducho_fast.core.io import atomic_bytes, npy_bytes
from ducho_fast.engine.sinks.base import ReadShards


def write_per_item(folder: Path, ids: Sequence[str], array: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for row, item_id in enumerate(ids):
        atomic_bytes(folder / f"{item_id}.npy", npy_bytes(array[row : row + 1]))


class DuchoSink:
    name = "ducho"
    layout = "ducho"

    def write_shard(self, folder: Path, ids: Sequence[str], features: np.ndarray) -> None:
        write_per_item(folder, ids, features.astype(np.float32))

    def finalize(
        self, folder: Path, ids: Sequence[str], read_shards: ReadShards, manifest: dict, fp16: bool
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)  # every item was written as it committed
