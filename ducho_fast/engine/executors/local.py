"""The local executor: this process's pipeline (decode workers, inference here, a writer)."""

from __future__ import annotations

from ducho_fast.engine.executors.base import PreparedPass, bar
from ducho_fast.engine.pipeline import ShardAssembler, run_batches


class LocalExecutor:
    name = "local"

    def run(self, prepared: PreparedPass, progress: bool) -> None:
        batches = prepared.started
        if batches is None:
            batches = prepared.modality.batches(
                prepared.listing.items,
                prepared.feeds,
                prepared.shards,
                prepared.options,
                prepared.timer,
            )
        with bar(prepared, progress) as update:
            run_batches(
                batches,
                prepared.jobs,
                ShardAssembler(prepared.store, prepared.listing.items, prepared.timer),
                prepared.options,
                prepared.timer,
                on_progress=update,
            )
