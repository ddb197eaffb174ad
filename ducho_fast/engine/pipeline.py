"""The extraction pipeline: decode/preprocess workers -> batches -> sessions -> writer.

Stages are joined by bounded queues; batches carry the positions of their items, so output
is reassembled in input order whatever the batching (length-sorted text, failed images).
`pipelined=False` runs the very same stage functions inline, one after the other: the
reference that pipelined output must equal.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ducho_fast.core.batching import text_batches
from ducho_fast.core.image import ImagePreprocessSpec, decode_image, draft_side, preprocess_image
from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.pool import decoded_batches
from ducho_fast.core.records import Failure, Item
from ducho_fast.engine.state import ShardStore
from ducho_fast.runtime.base import Session

_DONE = object()


@dataclass(frozen=True)
class PipelineOptions:
    batch_size: int = 32
    workers: int = 2
    shard_size: int = 1024
    prefetch_batches: int = 4
    item_timeout_s: float = 60.0
    jpeg_draft: bool = False  # reduced-size JPEG decoding: faster, not exact (opt-in)
    pipelined: bool = True
    progress: bool = True


@dataclass(frozen=True)
class ModelJob:
    """One model in a pass: its session, which preprocessing it reads, where outputs go."""

    label: str
    session: Session
    input_key: str
    outputs: Mapping[str, str]  # graph output name -> writer target name


@dataclass
class Batch:
    shard: int
    positions: list[int]
    inputs: dict[str, dict[str, np.ndarray]]
    failures: list[Failure] = field(default_factory=list)
    last_in_shard: bool = False


@dataclass(frozen=True)
class Shard:
    index: int
    positions: tuple[int, ...]


def plan_shards(count: int, shard_size: int, store: ShardStore) -> list[Shard]:
    """Contiguous shards of the item list; committed ones are skipped (resume)."""
    shards = []
    for index, start in enumerate(range(0, count, shard_size)):
        if not store.is_done(index):
            shards.append(Shard(index, tuple(range(start, min(start + shard_size, count)))))
    return shards


# --- images ------------------------------------------------------------------------------------


class ItemTimeoutError(TimeoutError):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt a stuck decode (SIGALRM); only possible in a process's main thread."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise ItemTimeoutError(f"timed out after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class ImageDataset:
    """Map-style dataset for the decode workers: decode once, preprocess per distinct spec."""

    def __init__(
        self,
        items: Sequence[Item],
        specs: Mapping[str, ImagePreprocessSpec],
        timeout_s: float,
        jpeg_draft: bool = False,
    ):
        self.items = list(items)
        self.specs = dict(specs)
        self.timeout_s = timeout_s
        self.draft_side = draft_side(self.specs.values()) if jpeg_draft and specs else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[int, dict | None, Failure | None, dict]:
        item = self.items[position]
        timings: dict[str, float] = {}
        stage = "decode"
        try:
            with time_limit(self.timeout_s):
                start = time.perf_counter()
                image = decode_image(item.path, self.draft_side)
                timings["read_decode"] = time.perf_counter() - start
                stage = "preprocess"
                start = time.perf_counter()
                pixels = {key: preprocess_image(image, s) for key, s in self.specs.items()}
                timings["preprocess"] = time.perf_counter() - start
        except Exception as exc:  # every bad file is recorded, none stops the run
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return position, None, Failure(item.item_id, item.path, stage, message), timings
        return position, pixels, None, timings


def collate_images(samples: list) -> tuple[list[int], dict, list[Failure], dict[str, float]]:
    positions, failures, per_key, timings = [], [], {}, {"read_decode": 0.0, "preprocess": 0.0}
    for position, pixels, failure, sample_timings in samples:
        for stage, seconds in sample_timings.items():
            timings[stage] += seconds
        if failure is not None:
            failures.append(failure)
            continue
        positions.append(position)
        for key, array in pixels.items():
            per_key.setdefault(key, []).append(array)
    inputs = {key: {"pixels": np.stack(arrays)} for key, arrays in per_key.items()}
    return positions, inputs, failures, timings


def image_batches(
    items: Sequence[Item],
    specs: Mapping[str, ImagePreprocessSpec],
    shards: Sequence[Shard],
    options: PipelineOptions,
    timer: StageTimer,
) -> Iterator[Batch]:
    """Batches of uint8 pixels, decoded by worker processes (or inline), in order."""
    plan = []
    for shard in shards:
        chunks = [
            list(shard.positions[i : i + options.batch_size])
            for i in range(0, len(shard.positions), options.batch_size)
        ]
        plan += [(shard.index, chunk, n == len(chunks) - 1) for n, chunk in enumerate(chunks)]
    if not plan:
        return
    workers = options.workers if options.pipelined else 0
    loader = decoded_batches(
        ImageDataset(items, specs, options.item_timeout_s, options.jpeg_draft),
        [chunk for _, chunk, _ in plan],
        collate_images,
        workers,
        read_ahead=max(workers, 1) * options.prefetch_batches,
    )
    for (shard, _, last), (positions, inputs, failures, timings) in zip(plan, loader, strict=True):
        for stage, seconds in timings.items():
            timer.add(stage, seconds / max(workers, 1))
        yield Batch(shard, positions, inputs, failures, last)


# --- text -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextEncoding:
    """How one text model tokenizes: `tokenize(texts) -> ids`, padding id, fixed length."""

    key: str
    tokenize: Callable[[list[str]], list[list[int]]]
    pad_id: int
    pad_to: int | None


def text_batch_stream(
    items: Sequence[Item],
    encoding: TextEncoding,
    shards: Sequence[Shard],
    batch_size: int,
    timer: StageTimer,
) -> Iterator[Batch]:
    """Per shard: tokenize, sort by length, pad each batch to its longest item."""
    for shard in shards:
        with timer.stage("preprocess"):
            ids = encoding.tokenize([items[p].text or "" for p in shard.positions])
            batches = list(text_batches(ids, encoding.pad_id, batch_size, encoding.pad_to))
        for n, batch in enumerate(batches):
            positions = [shard.positions[i] for i in batch.positions]
            yield Batch(
                shard.index, positions, {encoding.key: batch.inputs}, [], n == len(batches) - 1
            )
        if not batches:
            yield Batch(shard.index, [], {}, [], True)


# --- running ----------------------------------------------------------------------------------


class ReadAhead:
    """Runs `source` in a thread from construction, `depth` items ahead; iterate to consume.

    Starting at construction lets a pass decode its first images while models are still being
    opened. Errors re-raise in the consumer; `close()` stops the thread (iteration's end does).
    """

    def __init__(self, source: Iterable[Any], depth: int, timer: StageTimer):
        self.timer = timer
        self._channel: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, args=(source,), name="ducho-fast-reader", daemon=True
        )
        self._thread.start()

    def _produce(self, source: Iterable[Any]) -> None:
        try:
            for element in source:
                while not self._stop.is_set():
                    try:
                        self._channel.put(element, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._channel.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises
            self._channel.put(exc)

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                start = time.perf_counter()
                element = self._channel.get()
                self.timer.add("wait_for_input", time.perf_counter() - start)
                if element is _DONE:
                    return
                if isinstance(element, BaseException):
                    raise element
                yield element
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def prefetch(source: Iterable[Any], depth: int, timer: StageTimer) -> Iterator[Any]:
    """`source` read ahead in a thread (an already started ReadAhead is used as it is)."""
    reader = source if isinstance(source, ReadAhead) else ReadAhead(source, depth, timer)
    return iter(reader)


class ShardAssembler:
    """Collects a shard's rows (any order) and commits it in input order when complete."""

    def __init__(self, store: ShardStore, items: Sequence[Item], timer: StageTimer):
        self.store = store
        self.items = items
        self.timer = timer
        self.pending: dict[int, dict] = {}

    def add(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        state = self.pending.setdefault(batch.shard, {"positions": [], "rows": {}, "fail": []})
        state["positions"] += batch.positions
        state["fail"] += batch.failures
        for target, array in outputs.items():
            state["rows"].setdefault(target, []).append(array)
        if batch.last_in_shard:
            self.commit(batch.shard, self.pending.pop(batch.shard))

    def commit(self, shard: int, state: dict) -> None:
        with self.timer.stage("write"):
            order = np.argsort(np.asarray(state["positions"], dtype=np.int64), kind="stable")
            ids = [self.items[state["positions"][i]].item_id for i in order]
            features = {t: np.concatenate(rows)[order] for t, rows in state["rows"].items()}
            self.store.commit(shard, ids, features, state["fail"])


def infer(batch: Batch, jobs: Sequence[ModelJob], timer: StageTimer) -> dict[str, np.ndarray]:
    outputs: dict[str, np.ndarray] = {}
    if not batch.positions:
        return outputs
    timer.mark_first_input()
    with timer.stage("inference"):
        for job in jobs:
            produced = job.session.run(batch.inputs[job.input_key])
            for name, target in job.outputs.items():
                outputs[target] = produced[name]
    timer.count(len(batch.positions))
    return outputs


def run_batches(
    batches: Iterable[Batch],
    jobs: Sequence[ModelJob],
    assembler: ShardAssembler,
    options: PipelineOptions,
    timer: StageTimer,
    on_progress: Callable[[int], None] = lambda n: None,
) -> None:
    """Inference on the calling thread; reading ahead and writing on their own threads."""
    if not options.pipelined:
        for batch in batches:
            assembler.add(batch, infer(batch, jobs, timer))
            on_progress(len(batch.positions) + len(batch.failures))
        return
    writes: queue.Queue = queue.Queue(maxsize=max(options.prefetch_batches, 1))
    errors: list[BaseException] = []

    def write_loop() -> None:
        while (element := writes.get()) is not _DONE:
            if errors:
                continue  # drain so the producer never blocks
            try:
                assembler.add(*element)
            except BaseException as exc:
                errors.append(exc)

    writer = threading.Thread(target=write_loop, name="ducho-fast-writer", daemon=True)
    writer.start()
    try:
        for batch in prefetch(batches, options.prefetch_batches, timer):
            if errors:
                break
            writes.put((batch, infer(batch, jobs, timer)))
            on_progress(len(batch.positions) + len(batch.failures))
    finally:
        writes.put(_DONE)
        writer.join()
    if errors:
        raise errors[0]
