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
    draft_margin: float = 1.0  # decoded side >= margin x the input side (engine/draft_gate.py)
    draft_min_cosine: float = 0.99  # draft's fidelity floor (the run's min_cosine)
    pipelined: bool = True
    progress: bool = True
