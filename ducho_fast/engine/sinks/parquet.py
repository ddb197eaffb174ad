"""Parquet: one `features.parquet` per output, an `id` string column and an `embedding`
column of fixed-size float32 lists, so pandas, polars, DuckDB and Ray read the features with
their ids in one file. The run's fingerprint, model, layer and dimension are in the file's
key-value metadata (`ducho_fast`, JSON). Written whole after each pass (like the compact
arrays), through a temporary name: a rerun that changes the items rewrites it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.io import atomic_file
from ducho_fast.engine.sinks.base import ReadShards

FILE = "features.parquet"
METADATA_KEY = b"ducho_fast"


def pyarrow_modules():
    """pyarrow and pyarrow.parquet, or one line saying which extra installs them."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ConfigError(
            "output_format parquet needs pyarrow: pip install ducho-fast[parquet]"
        ) from None
    return pyarrow, pyarrow.parquet


def file_metadata(folder: Path, manifest: dict, count: int, dim: int) -> dict:
    """What the file says about itself: the output's model and layer (its folders), the
    run's fingerprint and the shape; a fusion says its method and inputs instead."""
    return {
        "model": folder.parent.name,
        "layer": folder.name,
        "dim": dim,
        "count": count,
        "dtype": "float32",
        **manifest,
    }


class ParquetSink:
    name = "parquet"
    layout = "fast"

    def write_shard(self, folder: Path, ids: Sequence[str], features: np.ndarray) -> None:
        """Nothing per shard: the engine keeps the shards; `finalize` writes the live rows."""

    def finalize(
        self, folder: Path, ids: Sequence[str], read_shards: ReadShards, manifest: dict, fp16: bool
    ) -> None:
        """Always float32 (--fp16-storage is the compact arrays' option); one row group per
        block of rows, so a large output is never held whole in memory."""
        pa, pq = pyarrow_modules()
        blocks = (np.ascontiguousarray(a.reshape(len(a), -1), np.float32) for a in read_shards())
        first = next(blocks, None)
        dim = 0 if first is None else first.shape[1]
        meta = file_metadata(folder, manifest, len(ids), dim)
        schema = pa.schema(
            [("id", pa.string()), ("embedding", pa.list_(pa.float32(), dim))],
            metadata={METADATA_KEY: json.dumps(meta).encode()},
        )
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(folder / FILE) as handle, pq.ParquetWriter(handle, schema) as writer:
            offset = 0
            for block in [] if first is None else [first, *blocks]:
                rows = pa.FixedSizeListArray.from_arrays(pa.array(block.ravel()), dim)
                names = pa.array(ids[offset : offset + len(block)], pa.string())
                writer.write_table(pa.Table.from_arrays([names, rows], schema=schema))
                offset += len(block)


def read_parquet(path: Path) -> tuple[list[str], np.ndarray, dict]:
    """A `features.parquet` back as (ids, float32 `(N, D)`, its metadata)."""
    _, pq = pyarrow_modules()
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    column = table.column("embedding").combine_chunks()
    dim = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return table.column("id").to_pylist(), values.reshape(len(table), dim), meta
