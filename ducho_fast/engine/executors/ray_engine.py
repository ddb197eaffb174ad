"""The Ray executor: a pass on Ray Data, committed here by the same store as a local run.

The pending items become a dataset (one row per item: shard, position, id, path or text).
Decoding and preprocessing run as Ray tasks (`map_batches`, one CPU each, spread over the
nodes), apart from inference, which runs in an actor pool: each actor opens the pass's models
once (`PreparedPass.reopen`, refused if its model differs from the driver's) and gets one GPU
when the cluster has GPUs. Results stream back to the driver, where one writer commits each
shard as soon as all its items are back: the same shards, markers and manifest as the local
engine, so resume, fingerprints, failures and fusion work across engines.

`ray` is imported only here, and only when a run asks for this engine.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ducho_fast.core import log as logs
from ducho_fast.core.errors import ConfigError
from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Batch, Item, Shard
from ducho_fast.engine.executors.base import (
    CountingAssembler,
    EngineOptions,
    PreparedPass,
    Reopen,
    bar,
)
from ducho_fast.engine.pipeline import infer
from ducho_fast.modalities import Feed, modality

log = logs.get("ray")
INSTALL = "the ray engine needs Ray Data: pip install ducho-fast[ray]"
DECODE_CPUS = 1.0  # what one decode task holds; inference actors share what is left


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # the engine runs on Ray Data
    except ImportError:
        raise ConfigError(INSTALL) from None
    return ray


@dataclass(frozen=True)
class Pool:
    """The inference actor pool: how many, each one's inference threads and the logical CPUs
    and GPUs Ray reserves for it."""

    actors: int
    threads: int
    cpus: float
    gpus: float


def plan_pool(resources: Mapping[str, float], workers: int | None, threads: int) -> Pool:
    """One actor per GPU, else enough single-thread (or `threads`-thread) actors for the
    cores; a decode task's CPU is kept free beside them, so decoding never starves."""
    cpus, gpus = float(resources.get("CPU", 1)), int(resources.get("GPU", 0))
    if workers is None:
        workers = gpus or max(1, int(cpus) // max(threads, 1))
    threads = threads or max(1, int(cpus) // workers)
    spare = cpus - DECODE_CPUS if cpus > DECODE_CPUS else cpus / 2
    share = min(float(threads), spare / workers)
    # more actors than GPUs share them (whole GPUs each would leave the extra ones unplaced)
    gpus_each = min(1.0, gpus / workers) if gpus else 0.0
    return Pool(workers, threads, round(max(share, 0.01), 2), gpus_each)


class RayExecutor:
    name = "ray"

    @contextmanager
    def scope(self, engine: EngineOptions) -> Iterator[None]:
        """Join the cluster at `ray_address`, or start a local Ray for the run (shut down,
        its temporary folder removed, after it). A Ray already started by the caller (a
        notebook, the tests) is used as it is and left running."""
        ray = import_ray()
        quiet_ray()
        if ray.is_initialized():
            yield
            return
        if engine.ray_address:
            ray.init(address=engine.ray_address, log_to_driver=False, configure_logging=False)
            try:
                yield
            finally:
                ray.shutdown()
            return
        folder = tempfile.mkdtemp(prefix="ducho-fast-ray-")  # short: Ray's sockets live there
        try:
            start = time.perf_counter()
            ray.init(
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                _temp_dir=folder,
            )
            log.info("local Ray started in %.1f s (%s)", time.perf_counter() - start, folder)
            yield
        finally:
            if ray.is_initialized():
                ray.shutdown()
            shutil.rmtree(folder, ignore_errors=True)

    def run(self, prepared: PreparedPass, progress: bool) -> None:
        if not prepared.shards:
            return
        if prepared.reopen is None:
            raise ConfigError(f"{prepared.name}: the ray engine needs a pass that can reopen")
        with self.scope(prepared.engine):  # a Ray already up (the run's) is reused
            self.stream(prepared, progress)

    def stream(self, prepared: PreparedPass, progress: bool) -> None:
        ray = import_ray()
        resources = ray.cluster_resources()
        pool = plan_pool(resources, prepared.engine.ray_workers, prepared.threads)
        log.info(
            "%s: %d inference actors x %d threads (%g CPU, %g GPU each) on Ray",
            prepared.name,
            pool.actors,
            pool.threads,
            pool.cpus,
            pool.gpus,
        )
        assembler = CountingAssembler(
            prepared.store, prepared.listing.items, prepared.timer, prepared.shards
        )
        timer, by_actor = prepared.timer, Counter[int]()
        with bar(prepared, progress) as advance:
            for row in results(ray, prepared, pool).iter_rows():
                positions, outputs, failures, seconds, actor = pickle.loads(row["payload"])
                by_actor[actor] += 1
                if positions:
                    timer.mark_first_input()
                    timer.add("inference", seconds)
                    timer.count(len(positions))
                batch = Batch(int(row["shard"]), positions, {}, failures)
                assembler.add(batch, outputs)
                advance(len(positions) + len(failures))
        assembler.check_done()
        log.info("%s: batches per actor (pid: batches): %s", prepared.name, dict(by_actor))


def quiet_ray() -> None:
    """Ray Data's start and finish lines and progress bars stay out of the run's output."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)


def item_table(prepared: PreparedPass) -> list[Any]:
    """The pending items as Arrow blocks of one model batch each (within a shard): a block
    is what a decode task takes and what an actor call gets, so batches spread over the
    actors as they are decoded instead of travelling as one block."""
    import pyarrow as pa

    items, size = prepared.listing.items, prepared.options.batch_size
    blocks = []
    for shard in prepared.shards:
        for start in range(0, len(shard.positions), size):
            positions = shard.positions[start : start + size]
            chosen = [items[p] for p in positions]
            columns = {
                "shard": pa.array([shard.index] * len(chosen), pa.int64()),
                "position": pa.array(positions, pa.int64()),
                "id": pa.array([i.item_id for i in chosen], pa.string()),
                "path": pa.array([i.path for i in chosen], pa.string()),
                "text": pa.array([i.text for i in chosen], pa.string()),
                "blob": pa.array([blob_cell(i) for i in chosen], pa.binary()),
            }
            blocks.append(pa.table(columns))
    return blocks


def blob_cell(item: Item) -> bytes | None:
    """Where a table cell's bytes are (the decode task reads them), pickled; None for files
    and texts."""
    return None if item.blob is None else pickle.dumps(item.blob, protocol=5)


def results(ray: Any, prepared: PreparedPass, pool: Pool) -> Any:
    """Items -> decode tasks -> inference actors, as a lazily streamed dataset."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    dataset = ray.data.from_arrow(item_table(prepared))
    decoded = dataset.map_batches(
        decode_rows,
        batch_size=prepared.options.batch_size,
        batch_format="numpy",
        fn_kwargs={
            "kind": prepared.modality.name,
            "feeds": prepared.feeds,
            "options": prepared.options,
        },
        num_cpus=DECODE_CPUS,  # tasks spread over the nodes (Ray Data's default strategy)
    )
    return decoded.map_batches(
        InferenceActor,
        batch_size=1,  # a row is a whole model batch
        batch_format="numpy",
        fn_constructor_kwargs={"reopen": prepared.reopen, "threads": pool.threads},
        compute=ray.data.ActorPoolStrategy(size=pool.actors),
        num_cpus=pool.cpus,
        num_gpus=pool.gpus,
    )


def decode_rows(
    rows: dict[str, np.ndarray], kind: str, feeds: dict[str, Feed], options: PipelineOptions
) -> dict[str, np.ndarray]:
    """Some items (of one or more shards) decoded and preprocessed by their modality's own
    batcher, exactly as the local engine does; one output row per model batch, with the
    items' positions in the pass and any failures (recorded, never dropped).

    Decoding runs in one forked child of this task (`core.pool`, a few ms per task), as the
    local engine's decode workers do: a decoder that crashes (or is killed for its memory)
    kills that child, not this Ray worker, which Ray would retry without end; the batch is
    retried alone, then item by item, and an item that kills it twice is recorded."""
    columns = zip(rows["id"], rows["path"], rows["text"], rows["blob"], strict=True)
    items = [
        Item(str(i), str(p), None if t is None else str(t), None if b is None else pickle.loads(b))
        for i, p, t, b in columns
    ]
    positions = [int(p) for p in rows["position"]]
    by_shard: dict[int, list[int]] = {}
    for local, shard in enumerate(rows["shard"]):
        by_shard.setdefault(int(shard), []).append(local)
    shards = [Shard(index, tuple(local)) for index, local in by_shard.items()]
    isolated = replace(options, workers=1, pipelined=True, prefetch_batches=2)
    shard_col, payloads = [], []
    for batch in modality(kind).batches(items, feeds, shards, isolated, StageTimer()):
        where = [positions[p] for p in batch.positions]
        shard_col.append(batch.shard)
        payloads.append(pickle.dumps((where, batch.inputs, batch.failures), protocol=5))
    return {"shard": np.asarray(shard_col, np.int64), "payload": np.asarray(payloads, object)}


class InferenceActor:
    """Opens the pass's models once (in this actor's process), then runs model batches."""

    def __init__(self, reopen: Reopen, threads: int):
        self.jobs, _ = reopen(threads)

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = []
        for shard, payload in zip(rows["shard"], rows["payload"], strict=True):
            positions, inputs, failures = pickle.loads(payload)
            start = time.perf_counter()
            outputs = infer(Batch(int(shard), positions, inputs, failures), self.jobs, TIMER)
            seconds = time.perf_counter() - start
            answer = (positions, outputs, failures, seconds, os.getpid())
            payloads.append(pickle.dumps(answer, protocol=5))
        return {"shard": rows["shard"], "payload": np.asarray(payloads, object)}


TIMER = StageTimer()  # an actor's own; the driver's timer gets each batch's seconds
