"""Sources: list the items of a run (id, where it comes from) and record what is unusable.

Nothing here decodes an image; listing is cheap and happens before the pipeline starts, so
a wrong column or a missing folder stops the run before any work is done.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.ids import UnsafeIdError, check_id, image_id, interaction_id
from ducho_fast.core.records import Failure, Item, Listing
from ducho_fast.engine.parquet import is_parquet, read_parquet_rows

# Folder entries that are never items: operating-system metadata beside the photos.
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", "icon\r"})


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
    """Every entry of `folder` (sorted by name) is an item, whatever its extension, as in
    Ducho: what cannot be read or decoded (not an image, a broken link, a stuck FIFO) is
    recorded when it is decoded. Hidden and system files and subfolders are recorded as
    skipped, never passed over silently. The id is the file name without its extension."""
    if not folder.is_dir():
        raise ConfigError(f"image folder {folder} does not exist")
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    candidates, skipped = [], []
    for entry in entries:
        path = Path(entry.path)
        reason = skip_reason(entry)
        if reason is None:
            candidates.append(Item(image_id(path, ducho_ids), str(path)))
        else:
            skipped.append(Failure(entry.name, str(path), "skipped", reason))
    listing = keep_valid(candidates)
    return Listing(listing.items, tuple(skipped) + listing.failures)


def skip_reason(entry: os.DirEntry) -> str | None:
    """Why a folder entry is not an item (None: it is one)."""
    if entry.name.startswith(".") or entry.name.lower() in SYSTEM_FILES:
        return "hidden or system file, not an image"
    if entry.is_dir():
        return "a subfolder: only the files directly in the image folder are items"
    return None


@dataclass(frozen=True)
class Row:
    """One row of a table: its first line (1-based) and its values by column. `problem` says
    why the row cannot be used (its values are then a best-effort split, to name its id)."""

    line: int
    values: dict[str, str]
    problem: str | None = None


def read_table(path: Path | str, encoding: str = "utf-8") -> tuple[list[str], list[Row]]:
    """A TSV/CSV file as strings (ids keep their leading zeros), read as pandas reads it for
    Ducho (`"` quotes a field), except that no row is lost silently: a row whose field count
    differs from the header's, or whose quote never closes or (in a TSV) runs over line breaks
    into lines that hold tabs, comes back with its `problem`, and the lines after it are read
    as rows. A UTF-8 byte-order mark is dropped; blank lines are skipped, as pandas does.
    A Parquet table may also be an fsspec URL (`s3://`, `gs://`, `file://`)."""
    if isinstance(path, str) and not is_parquet(path):  # a URL (parquet.input_location)
        raise ConfigError(f"{path}: only Parquet tables are read from URLs, not TSV or CSV")
    if isinstance(path, Path) and not path.is_file():
        raise ConfigError(f"input file {path} does not exist")
    if is_parquet(path):  # rows numbered from 1 where a TSV gives lines
        columns, values = read_parquet_rows(path)
        return columns, [Row(number, row) for number, row in enumerate(values, start=1)]
    assert isinstance(path, Path)
    lines = io.StringIO(decode_table(path, encoding), newline="").readlines()
    delimiter = "," if path.suffix.lower() == ".csv" else "\t"
    records = parse_records(lines, delimiter)
    header = next(records, None)
    if header is None:
        return [], []
    columns = header[1]
    return columns, [table_row(columns, line, fields, problem) for line, fields, problem in records]


def decode_table(path: Path, encoding: str) -> str:
    """The file's text; an undecodable byte stops the run naming where it is."""
    data = path.read_bytes()
    try:
        codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
        return data.decode(codec)
    except LookupError:
        raise ConfigError(f"{path}: unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: byte 0x{data[exc.start]:02x} at position {exc.start} is not "
            f"valid {encoding}; give the file's encoding with `encoding:` on its source block "
            "(or --encoding), e.g. latin-1 or cp1252"
        ) from None


Record = tuple[int, list[str], "str | None"]  # first line (1-based), fields, problem


def parse_records(lines: list[str], delimiter: str) -> Iterator[Record]:
    """Every record of `lines`; after a bad one, parsing starts again on its next line."""
    start = 0
    while start < len(lines):
        start = yield from records_from(lines, start, delimiter)


def records_from(lines: list[str], start: int, delimiter: str) -> Generator[Record, None, int]:
    """Records from line `start` on; returns the line to go on from after a bad record."""
    reader = csv.reader((lines[i] for i in range(start, len(lines))), delimiter=delimiter)
    done = 0
    while True:
        first = start + done
        try:
            fields = next(reader)
        except StopIteration:
            return len(lines)
        except csv.Error as exc:
            yield first + 1, naive_split(lines[first], delimiter), f"unreadable row ({exc})"
            return first + 1
        done = reader.line_num
        last = start + done
        problem = runaway_quote(lines[first:last], delimiter, last == len(lines))
        if problem is not None:
            yield first + 1, naive_split(lines[first], delimiter), problem
            return first + 1  # the quote was a character: the next lines are rows
        if fields:
            yield first + 1, fields, None


def naive_split(line: str, delimiter: str) -> list[str]:
    return line.rstrip("\r\n").split(delimiter)


def runaway_quote(lines: list[str], delimiter: str, at_end: bool) -> str | None:
    """Why a record is a quote that never closed, swallowing the rows below it (None for a
    one-line record or a genuine quoted field with line breaks)."""
    if at_end and quote_left_open(lines, delimiter):
        return "a quote opened in this row never closes"
    if len(lines) > 1 and delimiter == "\t" and any("\t" in line for line in lines[1:]):
        return (
            f"a quote opened in this row closes only {len(lines) - 1} line(s) below, over "
            "lines that hold tabs (rows of their own, read as rows)"
        )
    return None


def quote_left_open(lines: list[str], delimiter: str) -> bool:
    """Whether a quoted field is still open at the end of `lines` (one more line would
    join the same record)."""
    closed = [*lines[:-1], lines[-1].rstrip("\r\n") + "\n", "x\n"]
    reader = csv.reader(closed, delimiter=delimiter)
    next(reader, None)
    return reader.line_num > len(lines)


def table_row(columns: list[str], line: int, fields: list[str], problem: str | None) -> Row:
    values = dict(zip(columns, fields, strict=False))
    if problem is None and len(fields) != len(columns):
        problem = (
            f"{len(fields)} field(s) where the header has {len(columns)} (a tab or line break "
            "inside a text?)"
        )
    return Row(line, values, problem)


def require_columns(path: Path | str, columns: list[str], wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ConfigError(f"{path} has no column(s) {missing}; its columns are {columns}")


def list_texts(
    path: Path | str, id_column: str, text_columns: Sequence[str], encoding: str = "utf-8"
) -> Listing:
    """Item texts: one row per item; several text columns are joined with a space. Ids are
    kept exactly as written (spaces included), as pandas reads them for Ducho."""
    columns, rows = read_table(path, encoding)
    require_columns(path, columns, [id_column, *text_columns])
    ids = lambda row: row.values.get(id_column, "")  # noqa: E731
    return text_listing(path, rows, ids, text_columns, f"column {id_column!r}")


def list_interaction_texts(
    path: Path | str,
    id_columns: Sequence[str],
    text_columns: Sequence[str],
    encoding: str = "utf-8",
) -> Listing:
    """Interaction texts (e.g. reviews): id columns [user, item] give the id `user__item`."""
    if len(id_columns) != 2 or not text_columns:
        raise ConfigError(
            f"interactions need interaction_columns [user, item] and a text_column; got "
            f"{list(id_columns)} and {list(text_columns)}"
        )
    names, rows = read_table(path, encoding)
    require_columns(path, names, [*id_columns, *text_columns])
    user_col, item_col = id_columns

    def row_id(row: Row) -> str:
        user, item = row.values.get(user_col, ""), row.values.get(item_col, "")
        return interaction_id(user, item) if user and item else ""

    return text_listing(path, rows, row_id, text_columns, f"columns {list(id_columns)}")


def text_listing(
    path: Path | str,
    rows: Sequence[Row],
    row_id: Callable[[Row], str],
    text_columns: Sequence[str],
    id_where: str,
) -> Listing:
    """Items from table rows; each unusable row is recorded with its file:line."""
    candidates, failures = [], []
    for row in rows:
        item_id, where = row_id(row), f"{path}:{row.line}"
        text = " ".join(row.values.get(c, "").strip() for c in text_columns).strip()
        if row.problem is not None:
            failures.append(Failure(item_id, where, "read", f"{row.problem}; row skipped"))
        elif not item_id:
            failures.append(Failure("", where, "read", f"missing id in {id_where}"))
        elif not text:
            failures.append(Failure(item_id, where, "read", "empty or missing text"))
        else:
            candidates.append(Item(item_id, where, text))
    listing = keep_valid(candidates)
    return Listing(listing.items, tuple(failures) + listing.failures)
