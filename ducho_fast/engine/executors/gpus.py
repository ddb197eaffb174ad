"""One worker process per GPU of one node (Ducho's `gpu list: 0,1,2,3`), one writer.

Each worker is spawned (never forked: a forked child inherits the parent's CUDA state) with
`CUDA_VISIBLE_DEVICES` set to its one GPU in the environment it starts with, so the variable is
there before Python, torch or ONNX Runtime load, and the worker's device 0 is its own GPU
(the usual mistakes: every process on GPU 0, or all but one idle). Workers take pending shards
from one queue (a fast GPU takes more), decode, run the pass's models (reopened in the worker)
and send each batch's rows back; this process commits every shard through the pass's store.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from ducho_fast.core import log as logs
from ducho_fast.core.errors import ConfigError, ExtractionError
from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Batch, Item, Shard
from ducho_fast.engine.executors.base import PreparedPass, Reopen, bar
from ducho_fast.engine.pipeline import ShardAssembler, infer
from ducho_fast.modalities import modality

log = logs.get("gpus")
VISIBLE = "CUDA_VISIBLE_DEVICES"
_environment = threading.Lock()  # the environment is process-wide: one spawn at a time


@dataclass
class GpuWorker:
    """What one GPU's worker saw and did (kept for the run log and the tests)."""

    gpu: int
    visible: str | None = None  # CUDA_VISIBLE_DEVICES as the worker found it at start
    pid: int = 0
    shards: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class WorkerTask:
    """Everything a GPU's worker needs, sent once at spawn (picklable)."""

    gpu: int
    kind: str
    items: tuple[Item, ...]
    reopen: Reopen
    threads: int
    options: PipelineOptions


class GpusExecutor:
    name = "gpus"

    def __init__(self) -> None:
        self.workers: list[GpuWorker] = []  # the last pass's workers

    def run(self, prepared: PreparedPass, progress: bool) -> None:
        gpus = prepared.engine.gpus
        if not prepared.shards:
            return
        if not gpus:  # returning would finish the pass with nothing extracted, exit 0
            raise ConfigError(f"{prepared.name}: the gpus engine needs a GPU list (--gpus 0,1)")
        if prepared.reopen is None:
            raise ExtractionError(f"{prepared.name}: one process per GPU needs a reopenable pass")
        context = multiprocessing.get_context("spawn")
        work: Any = context.Queue()
        results: Any = context.Queue()
        for shard in prepared.shards:
            work.put(shard)
        for _ in gpus:
            work.put(None)
        options = replace(prepared.options, workers=max(prepared.options.workers // len(gpus), 0))
        processes = {}
        for gpu in gpus:
            task = WorkerTask(
                gpu,
                prepared.modality.name,
                prepared.listing.items,
                prepared.reopen,
                prepared.threads,
                options,
            )
            processes[gpu] = spawn_on(context, gpu, task, work, results)
        self.workers = [GpuWorker(gpu) for gpu in gpus]
        try:
            self.collect(prepared, progress, processes, results)
        finally:
            for process in processes.values():
                process.join(timeout=5)
                if process.is_alive():
                    process.kill()
        for worker in self.workers:
            log.info(
                "%s: GPU %d (CUDA_VISIBLE_DEVICES=%s, pid %d) ran shards %s",
                prepared.name,
                worker.gpu,
                worker.visible,
                worker.pid,
                worker.shards,
            )

    def collect(
        self, prepared: PreparedPass, progress: bool, processes: dict, results: Any
    ) -> None:
        """Commit batches as they come (a shard's come from one worker, in order) until
        every worker is done; a worker that dies or fails stops the run."""
        by_gpu = {worker.gpu: worker for worker in self.workers}
        assembler = ShardAssembler(prepared.store, prepared.listing.items, prepared.timer)
        timer, running = prepared.timer, set(processes)
        with bar(prepared, progress) as advance:
            while running:
                try:
                    message = results.get(timeout=1.0)
                except queue.Empty:
                    dead = [gpu for gpu in running if not processes[gpu].is_alive()]
                    if dead:
                        raise ExtractionError(
                            f"{prepared.name}: the worker of GPU {dead[0]} died (killed, or out "
                            "of memory); committed shards are kept: run again to finish"
                        ) from None
                    continue
                what, gpu, *body = message
                worker = by_gpu[gpu]
                if what == "start":
                    worker.visible, worker.pid = body
                elif what == "shard":
                    worker.shards.append(body[0])
                elif what == "batch":
                    batch, outputs, seconds = body
                    if batch.positions:
                        timer.mark_first_input()
                        timer.add("inference", seconds)
                        timer.count(len(batch.positions))
                    assembler.add(batch, outputs)
                    advance(len(batch.positions) + len(batch.failures))
                elif what == "error":
                    raise ExtractionError(f"{prepared.name}: the worker of GPU {gpu}: {body[0]}")
                elif what == "done":
                    running.discard(gpu)


def spawn_on(context: Any, gpu: int, task: WorkerTask, work: Any, results: Any) -> Any:
    """Start `task`'s worker with CUDA_VISIBLE_DEVICES=<gpu> in the environment it is born
    with (restored here at once)."""
    process = context.Process(
        target=gpu_worker, args=(task, work, results), name=f"ducho-fast-gpu{gpu}", daemon=True
    )
    with _environment, visible_devices(str(gpu)):
        process.start()
    return process


@contextmanager
def visible_devices(value: str) -> Iterator[None]:
    before = os.environ.get(VISIBLE)
    os.environ[VISIBLE] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(VISIBLE, None)
        else:
            os.environ[VISIBLE] = before


def gpu_worker(task: WorkerTask, work: Any, results: Any) -> None:
    """A GPU's worker: open the models once, then run shards until the queue says stop."""
    results.put(("start", task.gpu, os.environ.get(VISIBLE), os.getpid()))
    try:
        jobs, feeds = task.reopen(task.threads)
        kind, timer = modality(task.kind), StageTimer()
        while (shard := work.get()) is not None:
            results.put(("shard", task.gpu, shard.index))
            run_shard(task, shard, jobs, feeds, kind, timer, results)
    except Exception as exc:  # the parent stops the run with this line
        results.put(("error", task.gpu, f"{type(exc).__name__}: {exc}"))
        traceback.print_exc()
        return
    results.put(("done", task.gpu))


def run_shard(task, shard: Shard, jobs, feeds, kind, timer: StageTimer, results: Any) -> None:
    import time

    for batch in kind.batches(task.items, feeds, [shard], task.options, timer):
        start = time.perf_counter()
        outputs = infer(batch, jobs, timer)
        seconds = time.perf_counter() - start
        sent = Batch(batch.shard, batch.positions, {}, batch.failures, batch.last_in_shard)
        results.put(("batch", task.gpu, sent, outputs, seconds))
