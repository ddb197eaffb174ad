"""How a pass runs: batch size, decode workers, shards, timeouts."""

from __future__ import annotations

from dataclasses import dataclass


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
