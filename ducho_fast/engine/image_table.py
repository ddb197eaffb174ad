"""Parquet tables of encoded images as an image source: `input_path: images.parquet` in a
visual block, with an id column (`item_column`) and an image column (`image_column`: binary,
or Hugging Face datasets' `{bytes, path}` struct, which `image` names by default).

The table is listed in batches of rows, never whole: each usable row becomes an item holding
where its bytes are (a `Blob`, their hash as its fingerprint, so resume works as for files);
decoders read the bytes themselves, by row (core/blobs.py). A path or an fsspec URL.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ducho_fast.core.blobs import cell_bytes, is_image_type, parquet_file
from ducho_fast.core.errors import ConfigError
from ducho_fast.core.notices import notice
from ducho_fast.core.records import Blob, Failure, Item, Listing
from ducho_fast.engine.parquet import table_batches, text
from ducho_fast.engine.sources import keep_valid

IMAGE_COLUMN = "image"  # Hugging Face datasets' name for an Image feature


def image_table_columns(
    location: str, item_column: str | None, image_column: str | None
) -> tuple[str, str]:
    """The id and image columns of an image table: as given, else `image` (or the one column
    that holds encoded images) and the first other column; anything else is one line naming
    the columns the table has."""
    table = parquet_file(location)
    try:
        schema = table.schema_arrow
    finally:
        table.close()
    names = list(schema.names)
    images = [name for name in names if is_image_type(schema.field(name).type)]
    if image_column is None:
        if IMAGE_COLUMN in images or len(images) == 1:
            image_column = IMAGE_COLUMN if IMAGE_COLUMN in images else images[0]
            notice(f"{location}: no image_column; using {image_column!r} (columns: {names})")
        else:
            found = f"several: {images}" if images else "none"
            raise ConfigError(
                f"{location}: give image_column (the column of encoded images; binary or "
                f"{{bytes, path}}): found {found}; its columns are {names}"
            )
    if image_column not in names:
        raise ConfigError(f"{location} has no image_column {image_column!r}; columns: {names}")
    if not is_image_type(schema.field(image_column).type):
        raise ConfigError(
            f"{location}: image_column {image_column!r} holds {schema.field(image_column).type}, "
            f"not encoded images (binary, or a struct with `bytes`); columns: {names}"
        )
    if item_column is None:
        others = [name for name in names if name != image_column]
        if not others:
            raise ConfigError(f"{location}: give item_column; its only column is {image_column!r}")
        item_column = others[0]
        notice(f"{location}: no item_column; ids from {item_column!r} (columns: {names})")
    if item_column not in names:
        raise ConfigError(f"{location} has no item_column {item_column!r}; columns: {names}")
    return item_column, image_column


def list_image_rows(location: Path | str, item_column: str, image_column: str) -> Listing:
    """Items of an image table, one per row, in row order: a row without an id or without
    image bytes (null, empty, a path only) is recorded naming its row; duplicate and unsafe
    ids are refused as in a folder (first kept). The bytes are hashed here (the items'
    fingerprints) and then dropped: only where they are travels with the items."""
    location = str(location)
    candidates, failures, row = [], [], 0
    for batch in table_batches(location, [item_column, image_column]):
        ids = batch.column(item_column).to_pylist()
        for item_id, value in zip(ids, batch.column(image_column).to_pylist(), strict=True):
            where, item_id = f"{location}:{row + 1}", text(item_id)
            data, problem = cell_bytes(value)
            if not item_id:
                failures.append(Failure("", where, "read", f"missing id in {item_column!r}"))
            elif data is None:
                failures.append(Failure(item_id, where, "read", f"{problem}; row skipped"))
            else:
                digest = hashlib.sha256(data).hexdigest()[:32]
                blob = Blob(location, image_column, row, digest)
                candidates.append(Item(item_id, where, blob=blob))
            row += 1
    listing = keep_valid(candidates)
    return Listing(listing.items, tuple(failures) + listing.failures)
