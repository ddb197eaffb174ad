"""Item ids come from users' files and become file names: make them safe or refuse them."""

from __future__ import annotations

from pathlib import Path

MAX_NAME_BYTES = 240  # most file systems allow 255 bytes per name; leave room for ".npy.tmp"
FORBIDDEN = ("/", "\\", "\x00")


class UnsafeIdError(ValueError):
    """An id that cannot be a file name inside the output folder."""


def check_id(item_id: str) -> str:
    """Return the id if it is a safe file stem, else raise with the reason."""
    if not item_id or not item_id.strip():
        raise UnsafeIdError("empty id")
    if item_id in (".", "..") or item_id.startswith("."):
        raise UnsafeIdError(f"id {item_id!r} would be a hidden or special file name")
    bad = [c for c in FORBIDDEN if c in item_id]
    if bad or any(ord(c) < 32 for c in item_id):
        raise UnsafeIdError(f"id {item_id!r} contains a path separator or control character")
    if len((item_id + ".npy").encode("utf-8")) > MAX_NAME_BYTES:
        raise UnsafeIdError(f"id of {len(item_id.encode())} bytes is too long for a file name")
    return item_id


def image_id(path: Path, ducho_rule: bool = False) -> str:
    """The item id of an image file: its name without the extension (dots kept).

    Ducho cuts at the first dot (`a.b.jpg` -> `a`); `ducho_rule=True` reproduces that.
    """
    return path.name.split(".")[0] if ducho_rule else path.stem


def interaction_id(user: str, item: str) -> str:
    return f"{user}__{item}"
