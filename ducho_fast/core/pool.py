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
from concurrent.futures.process import BrokenProcessPool
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


def _decode_one(position: int) -> Any:
    return _worker_dataset[position]


def worker_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else None)


class _Workers:
    """A process pool that can be replaced when one of its workers dies (the OOM killer, a
    decoder that crashes): the pool is then broken for every queued task, so it is rebuilt."""

    def __init__(self, dataset: Any, workers: int):
        self.dataset = dataset
        self.workers = workers
        self.pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        """A pool whose workers are forked now, in the calling thread: left to the pool, they
        fork at the first submit, from whichever thread submits, and a pipe another thread has
        open at that moment (a subprocess's) stays open in the workers, so whoever waits for
        its end waits forever."""
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=worker_context(),
            initializer=_install,
            initargs=(self.dataset, os.getpid()),
        )
        pool.submit(os.getpid).result()  # forks every worker (fork pools start them all)
        return pool

    def submit(self, function: Callable, *args: Any) -> Future:
        return self.pool.submit(function, *args)

    def restart(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = self._start()

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def alone(self, function: Callable, *args: Any) -> tuple[bool, Any]:
        """Run one task with nothing else in flight: (False, None) if it killed its worker."""
        try:
            return True, self.pool.submit(function, *args).result()
        except BrokenProcessPool:
            self.restart()
            return False, None


def recovered(
    workers: _Workers,
    chunk: Sequence[int],
    collate: Callable[[list], Any],
    died: Callable[[int], Any],
) -> Any:
    """A chunk that was in flight when a worker died (it may be innocent: every task of a
    broken pool fails). Retried alone in a fresh pool; if it kills that one too, each of its
    items alone, twice at most: an item that kills its worker both times becomes
    `died(position)`. A dead worker so costs at most the items that kill it."""
    workers.restart()
    done, result = workers.alone(_decode, chunk, collate)
    if done:
        return result
    samples = []
    for position in chunk:
        done, sample = workers.alone(_decode_one, position)
        if not done:
            done, sample = workers.alone(_decode_one, position)
        samples.append(sample if done else died(position))
    return collate(samples)


def decoded_batches(
    dataset: Any,
    chunks: Iterable[Sequence[int]],
    collate: Callable[[list], Any],
    workers: int,
    read_ahead: int,
    died: Callable[[int], Any] | None = None,
) -> Iterator[Any]:
    """`collate([dataset[p] for p in chunk])` for each chunk, in order.

    With `workers == 0` everything runs inline (the sequential reference). Otherwise at most
    `read_ahead` chunks are in flight; closing the generator cancels what is queued. With
    `died`, a worker's death costs at most the items that cause it (see `recovered`); without
    it, a dead worker ends the run with BrokenProcessPool. The workers start here, in the
    caller's thread, not in the thread that later iterates (see `_Workers._start`).
    """
    if workers == 0:
        return (collate([dataset[position] for position in chunk]) for chunk in chunks)
    return _pooled(_Workers(dataset, workers), chunks, collate, read_ahead, died)


def _pooled(
    pool: _Workers,
    chunks: Iterable[Sequence[int]],
    collate: Callable[[list], Any],
    read_ahead: int,
    died: Callable[[int], Any] | None,
) -> Iterator[Any]:
    pending: deque[tuple[Sequence[int], Future]] = deque()
    remaining = iter(chunks)
    try:
        for chunk in remaining:
            pending.append((chunk, pool.submit(_decode, chunk, collate)))
            if len(pending) >= read_ahead:
                break
        while pending:
            chunk, future = pending.popleft()
            try:
                result = future.result()
            except BrokenProcessPool:
                if died is None:
                    raise
                result = recovered(pool, chunk, collate, died)
                pending = deque((c, pool.submit(_decode, c, collate)) for c, _ in pending)
            following = next(remaining, None)
            if following is not None:
                pending.append((following, pool.submit(_decode, following, collate)))
            yield result
    finally:
        pool.shutdown()
