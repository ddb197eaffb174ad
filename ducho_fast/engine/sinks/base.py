"""The Sink seam: where a (model, layer) output is written, in which layout.

The engine keeps each committed shard's features itself (float32, in the pass's state), so
resume, fusion and every sink read the same values. A sink only writes its own files: per
shard as shards commit (in the writer thread, overlapped with inference) and once at the end.
A new output format is one module with a `Sink` plus one `register_sink` call in `__init__`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.table import Table

# Which tree a sink writes into: Ducho's (`<dataset>/<output_path>/<backend>/<model>/<layer>`)
# or ducho-fast's own (`<dataset>/ducho-fast/<modality>/<source>/<backend>/<model>/<layer>`).
Layout = Literal["ducho", "fast"]
ReadShards = Callable[[], Iterator[np.ndarray]]


@dataclass(frozen=True)
class LayerOutput:
    """One (model, layer) output: its name in the run, and each sink's folder for it."""

    name: str
    folders: Mapping[str, Path] = field(default_factory=dict)  # sink name -> folder
    fp16: bool = False  # compact storage as float16 (--fp16-storage)
    # Ducho's per-item shape of an output that is more than a vector (a feature map's
    # (C, H, W)); the engine keeps rows flat, sinks get `(N, *item_shape)`.
    item_shape: tuple[int, ...] | None = None
    # Each item is a `(T, D)` sequence whose T varies by item (audio `pooling: none`): rows
    # are a `core.sequences` object array, and only sinks that take them may hold it.
    sequence: bool = False

    def __post_init__(self) -> None:
        if not self.sequence:
            return
        refused = [name for name in self.folders if not takes_sequences(get_sink(name))]
        if refused:
            raise ConfigError(
                f"{self.name} is a (1, T, D) sequence per item, which output format(s) "
                f"{refused} cannot hold (one row per item); use output_format: ducho"
            )

    def per_item(self, rows: np.ndarray) -> np.ndarray:
        """Flat rows `(N, D)` as the sinks get them: `(N, *item_shape)` for a feature map;
        a sequence output's rows as they are."""
        if self.item_shape is None or self.sequence:
            return rows
        return np.asarray(rows).reshape(len(rows), *self.item_shape)


class Sink(Protocol):
    name: str
    layout: Layout

    def write_shard(self, folder: Path, ids: Sequence[str], features: np.ndarray) -> None:
        """Write one committed shard's rows (float32; `(N, D)`, or `(N, C, H, W)` for a
        feature map; an object array of `(T, D)` for a sequence output, given only to sinks
        with `sequences = True`: see `LayerOutput`), before the shard's marker."""
        ...

    def finalize(
        self,
        folder: Path,
        ids: Sequence[str],
        read_shards: ReadShards,
        manifest: dict,
        fp16: bool,
    ) -> None:
        """After the pass: `ids` of every live row (the current items) in input order,
        `read_shards()` their features a block of rows at a time (float32), `manifest` the
        run's record for this output."""
        ...

    # Optional, for sinks that keep a file per item (finalize rewrites everything in the
    # others): `discard(folder, ids)` removes the files it wrote for `ids`, items gone from
    # the input or whose latest attempt failed. Optional `sequences = True`: the sink holds
    # rows of variable length (see `LayerOutput.sequence`).


def takes_sequences(sink: Sink) -> bool:
    """Whether `sink` holds a `(T, D)` sequence per item (Ducho's layout), not only rows."""
    return bool(getattr(sink, "sequences", False))


def discard(sink: Sink, folder: Path, ids: Sequence[str]) -> None:
    """Remove `sink`'s files for `ids`, if it keeps any per item."""
    remove = getattr(sink, "discard", None)
    if remove is not None and ids:
        remove(folder, ids)


SINKS: Table[Sink] = Table("output format", "ducho_fast.engine.sinks")
ALL_FORMATS = {"both": ("ducho", "compact")}  # Ducho's layout plus the compact arrays
register_sink = SINKS.register
get_sink = SINKS.lookup


def format_names() -> list[str]:
    return [*SINKS.names(), *ALL_FORMATS]


def sinks_for(output_format: str) -> tuple[str, ...]:
    """`output_format` as sink names: one name, several joined by commas, or `both`."""
    names = ALL_FORMATS.get(output_format) or tuple(
        part.strip() for part in output_format.split(",") if part.strip()
    )
    for name in names:
        get_sink(name)
    if not names:
        raise ConfigError(f"output_format is empty; use {format_names()}")
    return tuple(names)
