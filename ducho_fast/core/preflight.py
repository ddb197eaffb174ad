"""Checks of the folders a run writes, made before any model opens: a run that cannot write
its outputs should say so in one line at once, not after minutes of export or inference."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ducho_fast.core.errors import OutputError

# Room a run needs in each folder before it starts: exports are tens of MB, features a few MB
# per 10,000 items; a disk this full would fail mid-run anyway.
MIN_FREE_BYTES = 64 * 2**20
VIRTUAL_ROOTS = ("/proc", "/sys")


def check_folders(folders: Iterable[tuple[str, Path]], min_free: int = MIN_FREE_BYTES) -> None:
    """Each `(what, folder)` exists or is created, is a writable folder on a real file
    system, with `min_free` bytes free; else OutputError naming it and the fix."""
    seen: set[Path] = set()
    for what, folder in folders:
        path = Path(os.path.abspath(Path(folder).expanduser()))
        if path not in seen:
            seen.add(path)
            check_folder(what, path, min_free)


def check_folder(what: str, path: Path, min_free: int) -> None:
    real = path.resolve()
    for root in VIRTUAL_ROOTS:
        if real == Path(root) or Path(root) in real.parents:
            raise OutputError(
                f"{what} {path} is under {root}, a virtual file system: choose another folder"
            )
    blocker = first_file(path)
    if blocker is not None:
        raise OutputError(f"{what} {path}: {blocker} is a file, not a folder; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} {path} cannot be created: {exc.strerror or exc}") from exc
    probe_write(what, path)
    free = shutil.disk_usage(path).free
    if free < min_free:
        raise OutputError(
            f"{what} {path} has {free / 2**20:.1f} MB free, less than the "
            f"{min_free / 2**20:.0f} MB a run needs: free some space or choose another folder"
        )


def first_file(path: Path) -> Path | None:
    """The first existing part of `path` that is not a folder (a file in the way)."""
    for part in [*reversed(path.parents), path]:
        if part.exists() and not part.is_dir():
            return part
    return None


def probe_write(what: str, path: Path) -> None:
    """Create and remove a file: permissions, read-only mounts and ACLs all answer here."""
    try:
        handle, name = tempfile.mkstemp(prefix=".ducho-fast-probe-", dir=path)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        raise OutputError(
            f"{what} {path} is not writable ({exc.strerror or exc}): fix its permissions or "
            "choose another folder"
        ) from exc
