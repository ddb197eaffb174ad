"""Batch size by a timed sweep: the rule on a simulated clock, then a real run that remembers it."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.config import ModelEntry
from ducho_fast.engine import batch_sweep
from ducho_fast.engine.batch_sweep import SweepCache, SweepResult, sweep


def simulated(monkeypatch, seconds_for_batch):
    """A run whose duration is `seconds_for_batch(size)` on a fake clock, and its call log."""
    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(batch_sweep, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    sizes: list[int] = []

    def run(inputs):
        size = len(inputs["x"])
        sizes.append(size)
        clock.now += seconds_for_batch(size)

    return run, sizes


def make_inputs(size: int) -> dict[str, np.ndarray]:
    return {"x": np.zeros((size, 2))}


def test_overhead_bound_model_grows_to_the_largest_paying_size(monkeypatch):
    run, _ = simulated(monkeypatch, lambda size: 0.02 + 0.001 * size)
    result = sweep(run, make_inputs)
    assert result.batch_size == 128
    assert list(result.items_per_s) == [8, 16, 32, 64, 128]
    assert result.items_per_s[128] == pytest.approx(128 / 0.148)


def test_growth_stops_where_one_batch_would_exceed_the_time_budget(monkeypatch):
    run, sizes = simulated(monkeypatch, lambda size: 0.05 * size)  # flat: 20 items/s
    result = sweep(run, make_inputs)
    assert max(sizes) == 16, "32 items at 20 items/s would take 1.6 s: not tried"
    assert result.batch_size == 16, "flat throughput keeps the largest size tried"


def test_a_size_that_loses_throughput_ends_the_sweep_and_is_not_chosen(monkeypatch):
    run, sizes = simulated(monkeypatch, lambda size: 0.001 * size + 0.00005 * size**2)
    result = sweep(run, make_inputs)
    assert max(sizes) == 16
    assert result.batch_size == 8


def test_cache_round_trip_and_corrupt_file(tmp_path):
    cache = SweepCache(tmp_path)
    assert cache.get("k") is None
    cache.put("k", SweepResult(32, {8: 10.0, 32: 12.0}))
    found = cache.get("k")
    assert found == SweepResult(32, {8: 10.0, 32: 12.0}, cached=True)
    (tmp_path / "batch-sizes.json").write_text("{not json")
    assert cache.get("k") is None, "a damaged cache means a new sweep, not a crash"


def test_ducho_entry_without_batch_size_means_sweep():
    assert ModelEntry(model_name="resnet50").batch_size is None
    assert ModelEntry(model_name="resnet50", batch_size=4).batch_size == 4


@pytest.fixture
def few_images(tmp_path, product_photos) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for path in product_photos[:20]:
        (folder / path.name).symlink_to(path)
    return folder


def test_run_without_batch_size_sweeps_once_then_remembers(
    tiny_clip, few_images, tmp_path, monkeypatch
):

    cache = tmp_path / "cache"
    monkeypatch.setenv("DUCHO_FAST_CACHE", str(cache))
    options = RunOptions(progress=False)

    def run(name: str, batch_size: int | None):
        job = SingleModelJob(
            str(tiny_clip), tmp_path / name, images=few_images, batch_size=batch_size
        )
        (result,) = extract_single(job, options)
        features = np.load(tmp_path / name / tiny_clip.name / "image_embeds" / "features.npy")
        return result.metrics, features

    first, swept = run("first", None)
    assert "chosen by a sweep" in first["batch_size_choice"]
    entries = json.loads((cache / "batch-sizes.json").read_text())
    assert [e["batch_size"] for e in entries.values()] == [first["batch_size"]]

    second, _ = run("second", None)
    assert "remembered" in second["batch_size_choice"]
    assert second["batch_size"] == first["batch_size"]

    given, fixed = run("given", 3)
    assert (given["batch_size"], given["batch_size_choice"]) == (3, "given")
    np.testing.assert_allclose(swept, fixed, rtol=1e-4, atol=1e-5)


def test_a_size_that_fails_ends_the_sweep_with_the_sizes_that_ran(monkeypatch):
    run_timed, _ = simulated(monkeypatch, lambda size: 0.02 + 0.001 * size)

    def run(inputs):
        if len(inputs["x"]) >= 64:
            raise MemoryError("out of device memory")
        run_timed(inputs)

    result = sweep(run, make_inputs)
    assert list(result.items_per_s) == [8, 16, 32] and result.batch_size == 32


def test_text_sweep_batches_look_like_the_runs_length_sorted_ones():
    from ducho_fast.modalities.text import TextEncoding, text_inputs

    lengths = [17, 3, 20, 9, 1, 12, 6, 15, 11, 2, 19, 8, 14, 5, 10, 18, 4, 13, 7, 16]
    texts = [" ".join(["word"] * n) for n in lengths]
    encoding = TextEncoding("t", lambda batch: [[5] * len(t.split()) for t in batch], 0, None)
    batch = text_inputs(encoding, texts)(4)
    assert batch["attention_mask"].sum(axis=1).tolist() == [9, 10, 11, 12]
    assert batch["input_ids"].shape == (4, 12), "padded to its own longest, not the set's"
