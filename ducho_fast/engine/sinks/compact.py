"""The compact layout: `features.npy` (N, D), `ids.txt` and `manifest.json` per output.
A feature map is flattened to D = C*H*W (row-major); its shape is in Ducho's layout."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ducho_fast.core.io import atomic_bytes, atomic_file, atomic_json
from ducho_fast.engine.sinks.base import ReadShards


class CompactSink:
    name = "compact"
    layout = "fast"

    def write_shard(self, folder: Path, ids: Sequence[str], features: np.ndarray) -> None:
        """Nothing per shard: the engine keeps the shards; `finalize` writes the live rows."""

    def finalize(
        self, folder: Path, ids: Sequence[str], read_shards: ReadShards, manifest: dict, fp16: bool
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = [a.reshape(len(a), -1) for a in read_shards()]  # a feature map, flattened
        count = sum(a.shape[0] for a in arrays)
        dim = arrays[0].shape[1] if arrays else 0
        dtype = np.float16 if fp16 else np.float32
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": (count, dim),
        }
        # Streamed through write(), not a memory map: a full disk is then an OSError with
        # a message (OutputError), not SIGBUS.
        with atomic_file(folder / "features.npy") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            for array in arrays:
                handle.write(np.ascontiguousarray(array, dtype=dtype).tobytes())
        atomic_bytes(folder / "ids.txt", ("\n".join(ids) + ("\n" if ids else "")).encode())
        record = {**manifest, "count": count, "dim": dim, "dtype": np.dtype(dtype).name}
        atomic_json(folder / "manifest.json", record)
