"""The Executor seam: where a prepared pass's batches are decoded, run and committed.

The runner prepares a pass once (listing, opened models, fingerprint, pending shards, batch
size) and hands it to an executor, which must leave every pending shard committed in the
pass's store; finishing (sinks, failures) and fusion stay with the runner. Today's in-process
pipeline is the `local` executor; `ray` (Ray Data) and `gpus` (one process per GPU) are one
module each. Executors that run models elsewhere reopen them there with `PreparedPass.reopen`
and send rows back: the driver alone commits shards (one writer), so shards, markers and the
manifest are the same whichever executor ran them, and a run resumes on any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ducho_fast.core.errors import ExtractionError
from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Batch, Item, Listing, Shard
from ducho_fast.core.table import Table
from ducho_fast.engine.pipeline import ModelJob, ShardAssembler
from ducho_fast.engine.state import ShardStore
from ducho_fast.modalities import Feed, Modality

# threads (0: keep the plan's) -> the pass's jobs and feeds, opened in the calling process
Reopen = Callable[[int], tuple[tuple[ModelJob, ...], dict[str, Feed]]]


@dataclass(frozen=True)
class EngineOptions:
    """Where passes run beyond this process: a Ray cluster's address (None: a local Ray for
    the run) and its number of inference actors (None: one per GPU, else per core); the GPUs
    of one node that get one worker process each."""

    ray_address: str | None = None
    ray_workers: int | None = None
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class PreparedPass:
    """Everything decided before the first batch: computed once per pass."""

    name: str
    modality: Modality
    listing: Listing
    feeds: dict[str, Feed]  # feed key -> how its inputs are made
    jobs: tuple[ModelJob, ...]
    store: ShardStore
    shards: tuple[Shard, ...]  # pending (not yet committed) shards, in order
    options: PipelineOptions  # batch size decided
    timer: StageTimer
    started: Iterable[Batch] | None = None  # batches already being decoded (early start)
    engine: EngineOptions = EngineOptions()
    reopen: Reopen | None = None  # picklable: opens the same models in another process
    threads: int = 0  # the plan's inference threads per process (0: every core)

    @property
    def pending_items(self) -> int:
        return sum(len(shard.positions) for shard in self.shards)


class Executor(Protocol):
    name: str

    def run(self, prepared: PreparedPass, progress: bool) -> None:
        """Run and commit every pending shard of `prepared` (resumable: shard by shard)."""
        ...


EXECUTORS: Table[Executor] = Table("executor", "ducho_fast.engine.executors")
register_executor = EXECUTORS.register
get_executor = EXECUTORS.lookup


def executor_scope(name: str, engine: EngineOptions) -> AbstractContextManager[None]:
    """What an executor holds for a whole run (a Ray cluster, joined or started once for all
    passes); executors without a `scope` hold nothing."""
    scope = getattr(get_executor(name), "scope", None)
    return nullcontext() if scope is None else scope(engine)


class CountingAssembler(ShardAssembler):
    """Rows of a shard arriving in any order and from any worker: a shard commits once all
    its items are back (features or failures), in input order, by this one writer."""

    def __init__(
        self, store: ShardStore, items: Sequence[Item], timer: StageTimer, shards: Sequence[Shard]
    ):
        super().__init__(store, items, timer)
        self.left = {shard.index: len(shard.positions) for shard in shards}

    def add(self, batch: Batch, outputs: dict[str, np.ndarray]) -> None:
        if batch.shard not in self.left:
            raise ExtractionError(f"a worker returned rows of shard {batch.shard}, not pending")
        state = self.pending.setdefault(batch.shard, {"positions": [], "rows": {}, "fail": []})
        state["positions"] += batch.positions
        state["fail"] += batch.failures
        for target, array in outputs.items():
            state["rows"].setdefault(target, []).append(array)
        self.left[batch.shard] -= len(batch.positions) + len(batch.failures)
        if self.left[batch.shard] == 0:
            del self.left[batch.shard]
            self.commit(batch.shard, self.pending.pop(batch.shard))

    def check_done(self) -> None:
        """Every shard committed: a worker pool that ended early must not pass for done."""
        if self.left:
            missing = sum(self.left.values())
            raise ExtractionError(
                f"{missing} items of shards {sorted(self.left)} never came back from the "
                "workers; nothing of them was committed: run again to finish them"
            )


@contextmanager
def bar(prepared: PreparedPass, progress: bool) -> Iterator[Callable[[int], object]]:
    """The pass's progress bar (items), one look for every executor."""
    import sys

    from tqdm import tqdm

    label = ", ".join(job.label for job in prepared.jobs)
    with tqdm(
        total=prepared.pending_items,
        desc=f"{prepared.name} [{label}]",
        unit="item",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    ) as shown:
        yield shown.update
