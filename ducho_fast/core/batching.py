"""Batch formation: length-sorted windows for text (padding only to the batch's longest)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TextBatch:
    """Token arrays for some items, with their positions in the input order."""

    positions: np.ndarray
    inputs: dict[str, np.ndarray]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Positions grouped so that items of similar length share a batch (stable for ties)."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def pad_batch(
    token_ids: Sequence[Sequence[int]], pad_id: int, length: int | None = None
) -> dict[str, np.ndarray]:
    """Right-pad to the longest item (or to `length`) with an attention mask."""
    width = length if length is not None else max(len(ids) for ids in token_ids)
    input_ids = np.full((len(token_ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(token_ids), width), dtype=np.int64)
    for row, ids in enumerate(token_ids):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def text_batches(
    token_ids: Sequence[Sequence[int]],
    pad_id: int,
    batch_size: int,
    pad_to: int | None = None,
) -> Iterator[TextBatch]:
    """Length-sorted, dynamically padded batches; `pad_to` forces max-length padding."""
    lengths = [len(ids) for ids in token_ids]
    for positions in length_sorted_batches(lengths, batch_size):
        chosen = [token_ids[p] for p in positions]
        yield TextBatch(positions, pad_batch(chosen, pad_id, pad_to))
