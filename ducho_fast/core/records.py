"""What flows through a run: items to extract, and the record of any that could not be."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Failure:
    """An item that got no features, with the stage that failed and why (failures.tsv)."""

    item_id: str
    path: str
    stage: str
    error: str

    def row(self) -> list[str]:
        return [self.item_id, self.path, self.stage, self.error.replace("\n", " ")]


@dataclass(frozen=True)
class Blob:
    """Where an item's encoded bytes sit when they are a table's cell, not a file: the
    table (a path or an fsspec URL), its column, the row (from 0) and the bytes' hash (the
    item's content fingerprint, taken when the table is listed)."""

    table: str
    column: str
    row: int
    digest: str


@dataclass(frozen=True)
class Item:
    """One unit of work: an id and its payload (an image path, a text, or a table cell);
    `path` names where it comes from in messages (`table.parquet:7` for a table's row 7)."""

    item_id: str
    path: str
    text: str | None = None
    blob: Blob | None = None


@dataclass(frozen=True)
class Listing:
    items: tuple[Item, ...]
    failures: tuple[Failure, ...]


@dataclass
class Batch:
    """Some items of one shard as model input, by feed key; the shard's failures ride along."""

    shard: int
    positions: list[int]
    inputs: dict[str, dict[str, np.ndarray]]
    failures: list[Failure] = field(default_factory=list)
    last_in_shard: bool = False


@dataclass(frozen=True)
class Shard:
    """Contiguous items committed together (the unit of resume)."""

    index: int
    positions: tuple[int, ...]
