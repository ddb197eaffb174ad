"""One run per output folder: an exclusive `flock` on a lock file in each folder a run writes.

A second run on the same folder (say one with --overwrite, which wipes what the first is
writing) is refused at once with the holder's pid. The kernel drops a flock when its process
dies, even by SIGKILL, so a lock left by a dead run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ducho_fast.core.errors import OutputError

LOCK_NAME = ".ducho-fast.lock"

try:
    import fcntl
except ImportError:  # not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]

_held: set[int] = set()  # this process's lock descriptors


def _drop_inherited() -> None:
    """A forked child (a decode worker) shares the parent's lock; it would keep a killed
    run's folders locked until it noticed and exited. Closing (never unlocking: that would
    release the parent's lock too) its copies leaves the lock to the run alone."""
    for handle in list(_held):
        with contextlib.suppress(OSError):
            os.close(handle)
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_inherited)


@contextlib.contextmanager
def folder_locks(folders: Iterable[Path]) -> Iterator[None]:
    """Hold the lock of every folder (created if missing) for the block, or raise
    OutputError naming the folder and the run that holds it."""
    with contextlib.ExitStack() as stack:
        for folder in sorted({Path(os.path.abspath(f)) for f in folders}):
            stack.enter_context(folder_lock(folder))
        yield


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = acquire(path)
    _held.add(handle)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # before unlocking: a waiter holding this inode re-checks it
        _held.discard(handle)
        os.close(handle)


def acquire(path: Path) -> int:
    """Lock `path`, retrying if the file was replaced between open and lock (a finishing run
    removes it): the lock held is then always the one on the file at `path`."""
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(handle, 64).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise OutputError(
                f"{path.parent} is being written by another ducho-fast run (pid {holder}): "
                "wait for it to finish, or choose another output folder"
            ) from None
        try:
            same = os.fstat(handle).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()}\n".encode())
            return handle
        os.close(handle)
