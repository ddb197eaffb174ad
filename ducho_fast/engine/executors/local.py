"""The local executor: this process's pipeline (decode workers, inference here, a writer)."""

from __future__ import annotations

import sys

from ducho_fast.engine.executors.base import PreparedPass
from ducho_fast.engine.pipeline import ShardAssembler, run_batches


class LocalExecutor:
    name = "local"

    def run(self, prepared: PreparedPass, progress: bool) -> None:
        from tqdm import tqdm

        batches = prepared.started
        if batches is None:
            batches = prepared.modality.batches(
                prepared.listing.items,
                prepared.feeds,
                prepared.shards,
                prepared.options,
                prepared.timer,
            )
        label = ", ".join(job.label for job in prepared.jobs)
        with tqdm(
            total=prepared.pending_items,
            desc=f"{prepared.name} [{label}]",
            unit="item",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        ) as bar:
            run_batches(
                batches,
                prepared.jobs,
                ShardAssembler(prepared.store, prepared.listing.items, prepared.timer),
                prepared.options,
                prepared.timer,
                on_progress=bar.update,
            )
