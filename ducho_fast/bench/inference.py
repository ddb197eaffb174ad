"""Pure inference: preprocessed inputs in memory, every variant on the same batches, interleaved.

Variants take turns within each repetition so that machine noise (other load, frequency
changes) hits them alike; a full warm-up pass first also collects each variant's outputs for
the fidelity check against fp32 eager.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ducho_fast.core.fidelity import row_cosines
from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Item, Shard
from ducho_fast.resolve import OpenModel


@dataclass(frozen=True)
class Prepared:
    """A data set turned into model-ready batches; `positions` maps rows back to input order."""

    items: int
    batches: tuple[dict[str, np.ndarray], ...]
    positions: tuple[np.ndarray, ...]


def preprocess_key(opened: OpenModel) -> str:
    """Variants whose inputs are made alike share one prepared copy of the data."""
    return json.dumps([opened.modality.name, opened.feed.key])


def prepare(opened: OpenModel, items: Sequence[Item], batch_size: int) -> Prepared:
    """The modality's own batcher, inline, over every item: the run's exact inputs (items
    that fail to decode are left out here; the end-to-end run records them)."""
    options = PipelineOptions(batch_size=batch_size, workers=0, pipelined=False)
    everything = [Shard(0, tuple(range(len(items))))]
    feeds = {opened.feed.key: opened.feed}
    batches = [
        batch
        for batch in opened.modality.batches(items, feeds, everything, options, StageTimer())
        if batch.positions
    ]
    return Prepared(
        sum(len(b.positions) for b in batches),
        tuple(b.inputs[opened.feed.key] for b in batches),
        tuple(np.asarray(b.positions) for b in batches),
    )


def run_all(opened: OpenModel, prepared: Prepared) -> dict[str, np.ndarray]:
    """One pass over the data; outputs restored to input order."""
    chunks: dict[str, list[np.ndarray]] = {}
    for inputs in prepared.batches:
        for name, array in opened.session.run(inputs).items():
            chunks.setdefault(name, []).append(array.reshape(len(array), -1))
    order = np.argsort(np.concatenate(prepared.positions), kind="stable")
    return {name: np.concatenate(parts)[order] for name, parts in chunks.items()}


def fidelity(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per output: min and mean row cosine to the fp32 eager reference."""
    result = {}
    for name, ref in reference.items():
        cosines = row_cosines(ref, outputs[name])
        result[name] = {"min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean())}
    return result


def measure_inference(
    opened: dict[str, OpenModel],
    prepared: dict[str, Prepared],
    reference: dict[str, np.ndarray],
    repeats: int,
) -> dict[str, dict[str, Any]]:
    """items/s (median, min, max over repeats) and fidelity for each named variant."""
    figures: dict[str, dict[str, Any]] = {}
    for name, model in opened.items():
        figures[name] = {"fidelity": fidelity(reference, run_all(model, prepared[name]))}
    seconds: dict[str, list[float]] = {name: [] for name in opened}
    for _ in range(repeats):
        for name, model in opened.items():
            start = time.perf_counter()
            for inputs in prepared[name].batches:
                model.session.run(inputs)
            seconds[name].append(time.perf_counter() - start)
    for name, values in seconds.items():
        items = prepared[name].items
        figures[name].update(
            items_per_s=items / statistics.median(values),
            min_items_per_s=items / max(values),
            max_items_per_s=items / min(values),
            seconds=values,
        )
    return figures
