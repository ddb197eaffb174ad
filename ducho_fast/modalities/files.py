"""Files decoded in worker processes, the mechanism shared by the file modalities (images,
audio): each item read and preprocessed under a time limit, timed per stage, its failure
recorded with the stage it failed in; collated into batches per shard, in order."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.pool import decoded_batches
from ducho_fast.core.records import Batch, Failure, Item, Shard

T = TypeVar("T")
# The process that imported ducho-fast (a CLI run, a user's script, a test session) never arms
# SIGALRM. OpenVINO's CPU plugin sets and resets the main thread's alternate signal stack as it
# loads and unloads, and Python's handlers run on that stack (SA_ONSTACK): a SIGALRM delivered
# there after an unload was a kernel-forced SIGSEGV (si_code SI_KERNEL: the kernel could not
# write the signal frame) that killed a test session. Processes forked from it to decode
# (workers, Ray decode children) use SIGALRM on their own stack (see `own_signal_stack`).
IMPORTING_PID = os.getpid()
SS_DISABLE = 2  # sigaltstack's flag (Linux, macOS)
Sample = tuple[int, dict | None, Failure | None, dict]  # position, per-key payload, failure, s


class ItemTimeoutError(TimeoutError):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt a stuck decode (SIGALRM); only in the main thread of a decoding process
    (see `IMPORTING_PID`)."""
    if seconds <= 0 or not can_use_alarm():
        yield
        return

    def expire(signum, frame):
        raise ItemTimeoutError(f"timed out after {seconds:g} s")

    own_signal_stack()
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@functools.cache
def own_signal_stack() -> None:
    """Turn off the alternate signal stack a forked decoder inherits from its parent's thread
    (it may point into memory the parent's OpenVINO plugin freed), so the alarm's handler runs
    on this process's own stack. Once per process; where libc is not at hand, nothing."""
    with contextlib.suppress(OSError, AttributeError):
        disable = SignalStack(None, SS_DISABLE, 0)
        ctypes.CDLL(None, use_errno=True).sigaltstack(ctypes.byref(disable), None)


class SignalStack(ctypes.Structure):
    """libc's `stack_t`."""

    _fields_ = [
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    ]


def can_use_alarm() -> bool:
    """The main thread of a process forked to decode (signals reach only a main thread)."""
    return os.getpid() != IMPORTING_PID and threading.current_thread() is threading.main_thread()


def within(seconds: float, function: Callable[[], T]) -> T:
    """`function()`, or ItemTimeoutError after `seconds` (0: no limit).

    In a decode worker's main thread SIGALRM interrupts the read. Elsewhere (the process that
    runs ducho-fast, whose main thread decodes export and measurement samples and whose
    read-ahead thread decodes inline) the call runs in a daemon thread that is abandoned when
    it overruns: it cannot hang the run, and it ends with the read it is stuck in.
    """
    if seconds <= 0:
        return function()
    if can_use_alarm():
        with time_limit(seconds):
            return function()
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="ducho-fast-decode", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise ItemTimeoutError(f"timed out after {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


WORKER_DIED = "decode worker died (killed, e.g. out of memory, or the decoder crashed) twice"


class FileDataset:
    """Map-style dataset for the decode workers: `read` an item's file once, `prepare` it per
    feed key; subclasses say how. Any exception is the item's failure, never the run's."""

    def __init__(self, items: Sequence[Item], timeout_s: float):
        self.items = list(items)
        self.timeout_s = timeout_s

    def __len__(self) -> int:
        return len(self.items)

    def read(self, item: Item) -> Any:
        raise NotImplementedError

    def prepare(self, decoded: Any) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, position: int) -> Sample:
        item = self.items[position]
        timings: dict[str, float] = {}
        stage = ["decode"]

        def run() -> dict[str, Any]:
            start = time.perf_counter()
            decoded = self.read(item)
            timings["read_decode"] = time.perf_counter() - start
            stage[0] = "preprocess"
            start = time.perf_counter()
            prepared = self.prepare(decoded)
            timings["preprocess"] = time.perf_counter() - start
            return prepared

        try:
            prepared = within(self.timeout_s, run)
        except Exception as exc:  # every bad file is recorded, none stops the run
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return position, None, Failure(item.item_id, item.path, stage[0], message), {}
        return position, prepared, None, timings

    def died(self, position: int) -> Sample:
        """The record of an item that killed its decode worker again when retried alone."""
        item = self.items[position]
        return position, None, Failure(item.item_id, item.path, "decode", WORKER_DIED), {}


def collate_files(
    samples: list[Sample], combine: Callable[[list], Any]
) -> tuple[list[int], dict, list[Failure], dict[str, float]]:
    """(positions, {key: combine(the items' payloads)}, failures, seconds per stage)."""
    positions, failures, per_key = [], [], {}
    timings = {"read_decode": 0.0, "preprocess": 0.0}
    for position, payload, failure, sample_timings in samples:
        for stage, seconds in sample_timings.items():
            timings[stage] += seconds
        if failure is not None:
            failures.append(failure)
            continue
        positions.append(position)
        for key, value in (payload or {}).items():
            per_key.setdefault(key, []).append(value)
    return positions, {key: combine(values) for key, values in per_key.items()}, failures, timings


def worker_batches(
    dataset: Any,
    collate: Callable[[list], tuple[list[int], Any, list, dict[str, float]]],
    shards: Sequence[Shard],
    options: PipelineOptions,
    timer: StageTimer,
) -> Iterator[Batch]:
    """Each shard's items in batches, `dataset[p]` decoded by worker processes (or inline with
    no workers) and collated, in order. Not a generator itself: the decode workers start on
    this call, in the caller's thread (see `core.pool`), not in the thread that reads."""
    plan = []
    for shard in shards:
        chunks = [
            list(shard.positions[i : i + options.batch_size])
            for i in range(0, len(shard.positions), options.batch_size)
        ]
        plan += [(shard.index, chunk, n == len(chunks) - 1) for n, chunk in enumerate(chunks)]
    if not plan:
        return iter(())
    workers = options.workers if options.pipelined else 0
    loader = decoded_batches(
        dataset,
        [chunk for _, chunk, _ in plan],
        collate,
        workers,
        read_ahead=max(workers, 1) * options.prefetch_batches,
        died=dataset.died,
    )
    return planned_batches(plan, loader, max(workers, 1), timer)


def planned_batches(
    plan: Sequence[tuple[int, list[int], bool]],
    loader: Iterator[Any],
    workers: int,
    timer: StageTimer,
) -> Iterator[Batch]:
    for (shard, _, last), (positions, inputs, failures, timings) in zip(plan, loader, strict=True):
        for stage, seconds in timings.items():
            timer.add(stage, seconds / workers)  # stage time per worker: wall-clock share
        yield Batch(shard, positions, inputs, failures, last)
