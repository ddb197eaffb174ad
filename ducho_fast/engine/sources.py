"""Sources: list the items of a run (id, where it comes from) and record what is unusable.

Nothing here decodes an image; listing is cheap and happens before the pipeline starts, so
a wrong column or a missing folder stops the run before any work is done.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.ids import UnsafeIdError, check_id, image_id, interaction_id
from ducho_fast.core.records import Failure, Item, Listing

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".avif", ".jp2"}
)


def keep_valid(candidates: Iterable[Item]) -> Listing:
    """Refuse unsafe and duplicate ids (the first occurrence wins) with a recorded reason."""
    items, failures, seen = [], [], set()
    for item in candidates:
        try:
            check_id(item.item_id)
        except UnsafeIdError as exc:
            failures.append(Failure(item.item_id, item.path, "id", str(exc)))
            continue
        if item.item_id in seen:
            failures.append(Failure(item.item_id, item.path, "id", "duplicate id (first kept)"))
            continue
        seen.add(item.item_id)
        items.append(item)
    return Listing(tuple(items), tuple(failures))


def list_images(folder: Path, ducho_ids: bool = False) -> Listing:
    """Every image file in `folder` (sorted by name); the id is the file name sans extension."""
    if not folder.is_dir():
        raise ConfigError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return keep_valid(Item(image_id(p, ducho_ids), str(p)) for p in files)


def read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """A TSV/CSV file as strings (ids keep their leading zeros)."""
    if not path.is_file():
        raise ConfigError(f"input file {path} does not exist")
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def require_columns(path: Path, columns: list[str], wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ConfigError(f"{path} has no column(s) {missing}; its columns are {columns}")


def list_texts(path: Path, id_column: str, text_columns: Sequence[str]) -> Listing:
    """Item texts: one row per item; several text columns are joined with a space."""
    columns, rows = read_table(path)
    require_columns(path, columns, [id_column, *text_columns])
    candidates, failures = [], []
    for line, row in enumerate(rows, start=2):
        item_id = (row.get(id_column) or "").strip()
        where = f"{path}:{line}"
        text = " ".join((row.get(c) or "").strip() for c in text_columns).strip()
        if not item_id:
            failures.append(Failure("", where, "read", f"missing id in column {id_column!r}"))
        elif not text:
            failures.append(Failure(item_id, where, "read", "empty or missing text"))
        else:
            candidates.append(Item(item_id, where, text))
    listing = keep_valid(candidates)
    return Listing(listing.items, tuple(failures) + listing.failures)


def list_interaction_texts(
    path: Path, id_columns: Sequence[str], text_columns: Sequence[str]
) -> Listing:
    """Interaction texts (e.g. reviews): id columns [user, item] give the id `user__item`."""
    if len(id_columns) != 2 or not text_columns:
        raise ConfigError(
            f"interactions need interaction_columns [user, item] and a text_column; got "
            f"{list(id_columns)} and {list(text_columns)}"
        )
    names, rows = read_table(path)
    require_columns(path, names, [*id_columns, *text_columns])
    user_col, item_col = id_columns
    candidates, failures = [], []
    for line, row in enumerate(rows, start=2):
        item_id = interaction_id((row[user_col] or "").strip(), (row[item_col] or "").strip())
        text = " ".join((row.get(c) or "").strip() for c in text_columns).strip()
        where = f"{path}:{line}"
        if not text:
            failures.append(Failure(item_id, where, "read", "empty or missing text"))
        else:
            candidates.append(Item(item_id, where, text))
    listing = keep_valid(candidates)
    return Listing(listing.items, tuple(failures) + listing.failures)
