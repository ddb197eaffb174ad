"""Atomic file writes and stable hashing: a reader sees the old file or the new one, never half."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ducho_fast.core.errors import OutputError


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A file written through a temporary name and renamed into place.

    Plain buffered writes, never a memory map: on a full disk a write into a map is SIGBUS
    (the process dies without a word), a write() is an OSError. That error removes the
    temporary file and becomes one OutputError naming `path`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            yield handle
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OutputError):
            raise
        hint = " (free some space and rerun: committed work is kept)"
        raise OutputError(
            f"cannot write {path}: {exc}{hint if exc.errno == errno.ENOSPC else ''}"
        ) from exc


def atomic_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as handle:
        handle.write(data)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def atomic_json(path: Path, data: object) -> None:
    atomic_bytes(path, json.dumps(data, indent=1).encode())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
