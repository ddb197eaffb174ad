"""The Executor seam: where a prepared pass's batches are decoded, run and committed.

The runner prepares a pass once (listing, opened models, fingerprint, pending shards, batch
size) and hands it to an executor, which must leave every pending shard committed in the
pass's store; finishing (sinks, failures) and fusion stay with the runner. Today's in-process
pipeline is the `local` executor; another engine (Ray) is one module plus one table entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Batch, Listing, Shard
from ducho_fast.core.table import Table
from ducho_fast.engine.pipeline import ModelJob
from ducho_fast.engine.state import ShardStore
from ducho_fast.modalities import Feed, Modality


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
