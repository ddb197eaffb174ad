"""The extraction pipeline: decode/preprocess workers -> batches -> sessions -> writer.

Stages are joined by bounded queues; batches carry the positions of their items, so output
is reassembled in input order whatever the batching (length-sorted text, failed images).
`pipelined=False` runs the very same stage functions inline, one after the other: the
reference that pipelined output must equal.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Batch, Item
from ducho_fast.engine.state import ShardStore
from ducho_fast.runtime.base import Session

_DONE = object()


@dataclass(frozen=True)
class ModelJob:
    """One model in a pass: its session, which preprocessing it reads, where outputs go."""

    label: str
    session: Session
    input_key: str
    outputs: Mapping[str, str]  # graph output name -> writer target name


# --- images ------------------------------------------------------------------------------------


# --- text -------------------------------------------------------------------------------------


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
