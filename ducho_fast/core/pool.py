"""Ordered batch decoding in worker processes, with a bounded read-ahead.

Standard-library processes rather than torch's DataLoader, so an ONNX Runtime run never
imports torch (seconds of start-up). Workers are forked where the platform allows (as
DataLoader's are): `spawn`/`forkserver` would re-import the user's main script in every worker
and fail for scripts without an `if __name__ == "__main__"` guard.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

_worker_dataset: Any = None


def _install(dataset: Any, main_pid: int) -> None:
    global _worker_dataset
    _worker_dataset = dataset
    threading.Thread(target=_exit_with, args=(main_pid,), daemon=True).start()


def _exit_with(main_pid: int, interval_s: float = 0.5) -> None:
    """A worker outlives a killed run otherwise: it blocks on a queue whose write end it holds
    itself. Exit as soon as the main process is gone (as DataLoader workers do)."""
    while True:
        time.sleep(interval_s)
        try:
            os.kill(main_pid, 0)
        except (ProcessLookupError, PermissionError):  # gone, or its pid reused by another user
            os._exit(0)


def _decode(chunk: Sequence[int], collate: Callable[[list], Any]) -> Any:
    return collate([_worker_dataset[position] for position in chunk])


def worker_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


def decoded_batches(
    dataset: Any,
    chunks: Iterable[Sequence[int]],
    collate: Callable[[list], Any],
    workers: int,
    read_ahead: int,
) -> Iterator[Any]:
    """`collate([dataset[p] for p in chunk])` for each chunk, in order.

    With `workers == 0` everything runs inline (the sequential reference). Otherwise at most
    `read_ahead` chunks are in flight; closing the generator cancels what is queued.
    """
    if workers == 0:
        for chunk in chunks:
            yield collate([dataset[position] for position in chunk])
        return
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=worker_context(),
        initializer=_install,
        initargs=(dataset, os.getpid()),
    )
    pending: deque[Future] = deque()
    remaining = iter(chunks)
    try:
        for chunk in remaining:
            pending.append(pool.submit(_decode, chunk, collate))
            if len(pending) >= read_ahead:
                break
        while pending:
            result = pending.popleft().result()
            following = next(remaining, None)
            if following is not None:
                pending.append(pool.submit(_decode, following, collate))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
