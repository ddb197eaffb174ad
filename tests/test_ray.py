"""The Ray engine: the same files as the local engine, and resume across engines.

One local Ray (2 CPUs) serves the module; a Ducho config with a visual_textual block (images
and texts through a tiny CLIP, fused) and a textual block runs on both engines; a Ray run
killed part-way is finished by the next run without redoing what it committed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ducho_fast.api import RunOptions, extract_config
from ducho_fast.engine.executors.ray_engine import plan_pool
from ducho_fast.engine.state import read_failures
from ducho_fast.modalities.image import synthetic_images

ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "a red cotton shirt",
    "blue denim jeans, slim fit",
    "soft wool jumper (grey)",
    "black leather boots",
    "white linen dress",
    "green rain jacket",
    "a very long description of a summer hat with a wide brim, straw, beige ribbon",
    "socks",
]


@pytest.fixture(scope="module")
def models(tiny_clip, tiny_st) -> tuple[Path, Path]:
    return tiny_clip, tiny_st


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module (2 CPUs, no dashboard); its address for other drivers."""
    ray = pytest.importorskip("ray", reason="pip install ducho-fast[ray]")
    folder = tempfile.mkdtemp(prefix="dft-ray-")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _temp_dir=folder,
    )
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    shutil.rmtree(folder, ignore_errors=True)


def dataset(tmp_path: Path, name: str, count: int = 8) -> Path:
    """Photos p0..p{count-1} (plus one broken file) and their texts (a TSV, and a Parquet
    copy that the textual block reads)."""
    root = tmp_path / name
    (root / "images").mkdir(parents=True)
    for index, pixels in enumerate(synthetic_images(count, (90, 120), seed=3)):
        Image.fromarray(pixels).save(root / "images" / f"p{index}.jpg", quality=90)
    (root / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    rows = [f"p{i}\t{TEXTS[i % len(TEXTS)]} {i}" for i in range(count)]
    (root / "items.tsv").write_text("id\ttext\n" + "\n".join(rows) + "\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, texts = zip(*(row.split("\t") for row in rows), strict=True)
    pq.write_table(pa.table({"id": list(ids), "text": list(texts)}), root / "items.parquet")
    return root


def config(root: Path, models: tuple[Path, Path], textual: bool = True, **keys) -> Path:
    """A Ducho config: a visual_textual block (a CLIP; images and the TSV, fused by concat)
    and, with `textual`, a textual block (sentence-transformers over the Parquet table)."""
    clip, st = models
    entry = {"model_name": str(clip), "backend": "transformers", "output_layers": 1}
    text = {"model_name": str(st), "backend": "sentence_transformers", "output_layers": 1}
    data = {
        "dataset_path": str(root),
        "shard_size": 2,
        "workers": 0,
        "visual_textual": {
            "items": {
                "input_path": {"visual": "images", "textual": "items.tsv"},
                "item_column": "id",
                "text_column": "text",
                "output_path": {"visual": "v", "textual": "t"},
                "model": [{**entry, "batch_size": 2, "fusion": ["concat"]}],
            }
        },
        "textual": {
            "items": {
                "input_path": "items.parquet",
                "item_column": "id",
                "text_column": "text",
                "output_path": "texts",
                "model": [{**text, "batch_size": 3}],
            }
        },
        **keys,
    }
    if not textual:
        del data["textual"]
    path = root / "config.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def outputs(root: Path) -> dict[str, dict[str, np.ndarray]]:
    """Every Ducho-layout feature file under the dataset, by folder then id."""
    found: dict[str, dict[str, np.ndarray]] = {}
    for path in sorted(root.rglob("*.npy")):
        relative = path.relative_to(root)
        if ".ducho-fast" in relative.parts or relative.parts[0] == "ducho-fast":
            continue
        found.setdefault(str(relative.parent), {})[path.stem] = np.load(path)
    return found


def assert_same_outputs(got: Path, want: Path) -> None:
    a, b = outputs(got), outputs(want)
    assert sorted(a) == sorted(b)
    for folder in a:
        assert sorted(a[folder]) == sorted(b[folder]), folder
        for key in a[folder]:
            np.testing.assert_allclose(a[folder][key], b[folder][key], rtol=1e-4, atol=1e-5)


QUIET = RunOptions(progress=False)


def test_ray_engine_writes_what_the_local_engine_writes(ray_address, models, tmp_path):
    local, on_ray = dataset(tmp_path, "local"), dataset(tmp_path, "ray")
    extract_config(config(local, models), options=QUIET)
    results = extract_config(config(on_ray, models, engine="ray", ray_workers=2), options=QUIET)
    assert [r.metrics["items"] for r in results] == [8, 8, 8]  # images, texts, texts
    assert_same_outputs(on_ray, local)
    assert len(outputs(on_ray)["v_t_concat/transformers/" + models[0].name + "/1"]) == 8
    for root in (local, on_ray):  # the broken image is recorded the same way by both
        (failure,) = read_failures(root / "v" / "failures.tsv")
        assert (failure.item_id, failure.stage) == ("broken", "decode")
    # a finished Ray run is a finished run for the local engine too (same fingerprints)
    again = extract_config(config(on_ray, models), options=QUIET)
    assert [r.metrics["items"] for r in again] == [0, 0, 0]


RAY_DRIVER = """
import sys, time
from ducho_fast.api import RunOptions, extract_config
from ducho_fast.engine import state

commit = state.ShardStore.commit
def slow_commit(self, *args, **kwargs):  # the driver commits slowly: killed mid-way
    commit(self, *args, **kwargs)
    time.sleep(0.3)
state.ShardStore.commit = slow_commit
options = RunOptions(progress=False, engine="ray", ray_address=sys.argv[2])
extract_config(sys.argv[1], options=options)
"""


def test_a_killed_ray_run_resumes_without_redoing_committed_items(ray_address, models, tmp_path):
    reference = dataset(tmp_path, "reference", count=16)
    extract_config(config(reference, models, False), options=QUIET)  # exports the model too
    root = dataset(tmp_path, "killed", count=16)
    path = config(root, models, False, shard_size=1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *sys.path])}
    driver = subprocess.Popen(
        [sys.executable, "-c", RAY_DRIVER, str(path), ray_address],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    state = root / "v" / ".ducho-fast" / "state"
    deadline = time.monotonic() + 120
    while len(list(state.rglob("shard-*.json"))) < 3:
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the Ray run committed nothing"
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    markers = [json.loads(path.read_text()) for path in state.rglob("shard-*.json")]
    assert 3 <= len(markers) < 17  # part-way: some image shards committed, not all
    done = sum(len(marker["ids"]) for marker in markers)  # items with features

    results = extract_config(config(root, models, False, shard_size=1, engine="ray"), options=QUIET)
    (images,) = [r for r in results if r.name.endswith("/visual")]
    assert images.metrics["items"] == 16 - done  # only what was not committed
    assert images.succeeded == 16 and [f.item_id for f in images.failures] == ["broken"]
    assert_same_outputs(root, reference)


def test_a_run_started_locally_finishes_on_ray(ray_address, models, tmp_path):
    """Half the photos extracted locally; the rest appear; Ray computes only those, and the
    files equal a local run over all of them."""
    reference, root = dataset(tmp_path, "reference"), dataset(tmp_path, "mixed")
    extract_config(config(reference, models, False), options=QUIET)
    later = root / "later"
    later.mkdir()
    for name in ("p4", "p5", "p6", "p7"):
        (root / "images" / f"{name}.jpg").rename(later / f"{name}.jpg")
    extract_config(config(root, models, False), options=QUIET)  # the local engine
    for photo in later.iterdir():
        photo.rename(root / "images" / photo.name)
    results = extract_config(config(root, models, False, engine="ray"), options=QUIET)
    (images,) = [r for r in results if r.name.endswith("/visual")]
    assert images.metrics["items"] == 4  # the new photos only (and the broken one retried)
    assert_same_outputs(root, reference)


def test_actor_pool_sizing_keeps_a_cpu_for_decoding():
    assert plan_pool({"CPU": 2.0}, None, 0) == plan_pool({"CPU": 2.0}, 2, 1)
    two = plan_pool({"CPU": 2.0}, None, 0)
    assert (two.actors, two.threads, two.cpus, two.gpus) == (2, 1, 0.5, 0.0)
    gpus = plan_pool({"CPU": 32.0, "GPU": 4.0}, None, 0)
    assert (gpus.actors, gpus.threads, gpus.gpus) == (4, 8, 1.0)
    one = plan_pool({"CPU": 8.0}, 1, 4)
    assert (one.actors, one.threads, one.cpus) == (1, 4, 4.0)


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    from ducho_fast.core.errors import ConfigError
    from ducho_fast.engine.executors.ray_engine import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(ConfigError, match=r"pip install ducho-fast\[ray\]"):
        import_ray()


def test_the_bench_runs_each_variant_on_ray_beside_its_local_run(tmp_path):
    from ducho_fast.bench import BenchConfig
    from ducho_fast.bench.run import ray_jobs

    config = BenchConfig("m", tmp_path, images=tmp_path, engine="ray", ray_workers=(1, 2))
    jobs = ray_jobs(config, "onnxruntime:fp32", {"mode": "ducho-fast"})
    assert {name: (job["engine"], job["ray_workers"]) for name, job in jobs.items()} == {
        "onnxruntime:fp32@ray1": ("ray", 1),
        "onnxruntime:fp32@ray2": ("ray", 2),
    }
    assert ray_jobs(BenchConfig("m", tmp_path, images=tmp_path), "x:fp32", {}) == {}


def test_engine_flags_reach_the_run(models, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ducho_fast.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    root = dataset(tmp_path, "cli", count=2)
    path = config(root, models, False)
    flags = ["--engine", "ray", "--ray-workers", "2", "--no-progress"]
    done = CliRunner().invoke(main, ["extract", "--config", str(path), *flags])
    assert done.exit_code != 0
    assert "pip install ducho-fast[ray]" in done.output
    assert not list(root.rglob("shard-*.json"))  # nothing ran


def test_each_block_is_one_model_batch_so_batches_spread_over_the_actors():
    """One block per shard went whole to one actor (no scaling): blocks are model batches."""
    from types import SimpleNamespace

    from ducho_fast.core.options import PipelineOptions
    from ducho_fast.core.records import Item, Listing, Shard
    from ducho_fast.engine.executors.ray_engine import item_table

    items = tuple(Item(f"i{n}", f"/x/{n}.jpg") for n in range(10))
    prepared = SimpleNamespace(
        listing=Listing(items, ()),
        options=PipelineOptions(batch_size=3),
        shards=(Shard(4, (0, 1, 2, 3, 4, 5, 6)), Shard(5, (7, 8, 9))),
    )
    blocks = [block.to_pydict() for block in item_table(prepared)]
    assert [(b["shard"][0], b["position"]) for b in blocks] == [
        (4, [0, 1, 2]),
        (4, [3, 4, 5]),
        (4, [6]),
        (5, [7, 8, 9]),
    ]
    assert blocks[0]["id"] == ["i0", "i1", "i2"] and blocks[0]["text"] == [None] * 3


def test_more_actors_than_gpus_share_them():
    """Whole GPUs each would leave actors beyond the GPU count unplaced: the run would wait."""
    shared = plan_pool({"CPU": 8.0, "GPU": 1.0}, 4, 0)
    assert (shared.actors, shared.gpus) == (4, 0.25)


def crash_plan(photos: Path, batch_size: int = 3):
    """A pass's pending items (the photos, in 2 shards) as Ray would hand them to a decode
    task, with an image feed: what `decode_rows` and `results` take."""
    from types import SimpleNamespace

    from ducho_fast.core.image import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessSpec
    from ducho_fast.core.options import PipelineOptions
    from ducho_fast.core.records import Item, Listing, Shard
    from ducho_fast.modalities import Feed, modality

    spec = ImagePreprocessSpec("exact", (32, 32), "bilinear", None, IMAGENET_MEAN, IMAGENET_STD)
    items = tuple(Item(p.stem, str(p)) for p in sorted(photos.iterdir()))
    return SimpleNamespace(
        listing=Listing(items, ()),
        options=PipelineOptions(batch_size=batch_size, workers=0),
        shards=(Shard(0, (0, 1, 2, 3)), Shard(1, (4, 5))),
        modality=modality("image"),
        feeds={"px": Feed("px", spec)},
        reopen=None,
    )


def test_a_decoder_that_crashes_costs_its_item_not_the_ray_run(jpeg_photos, monkeypatch):
    """A decode task decodes in a child process, as the local engine's workers do: a decoder
    that kills its process (here: p2, in any process but this one) is recorded for that item,
    and the others of its batch are decoded. Inline, the Ray worker itself would die and Ray
    would retry the task without end."""
    import pickle

    from ducho_fast.engine.executors.ray_engine import decode_rows, item_table
    from ducho_fast.modalities import image as image_modality
    from ducho_fast.modalities.files import WORKER_DIED

    here, read = os.getpid(), image_modality.ImageDataset.read

    def crashing_read(self, item):
        if item.item_id == "p2" and os.getpid() != here:
            os._exit(9)  # a decoder's segfault, or the OOM killer
        return read(self, item)

    monkeypatch.setattr(image_modality.ImageDataset, "read", crashing_read)
    plan = crash_plan(jpeg_photos)
    decoded = {}
    for block in item_table(plan):
        rows = {name: np.asarray(values, object) for name, values in block.to_pydict().items()}
        out = decode_rows(rows, "image", plan.feeds, plan.options)
        for payload in out["payload"]:
            positions, _, failures = pickle.loads(payload)
            decoded.update(dict.fromkeys(positions, "ok"))
            decoded.update({f.item_id: (f.stage, f.error) for f in failures})
    assert decoded == {0: "ok", 1: "ok", "p2": ("decode", WORKER_DIED), 3: "ok", 4: "ok", 5: "ok"}


def test_the_ray_plan_uses_no_deprecated_ray_arguments(ray_address, jpeg_photos):
    import warnings

    import ray

    from ducho_fast.engine.executors.ray_engine import Pool, results

    plan = crash_plan(jpeg_photos)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results(ray, plan, Pool(1, 1, 0.5, 0.0))
    ours = [w for w in caught if "ray_remote_args" in str(w.message)]  # Ray 2.x deprecates it
    assert not ours, ours[0].message


def test_an_image_table_on_ray_through_a_file_url(ray_address, models, tmp_path):
    """A Parquet table of the photos' bytes (Hugging Face's layout), read by the decode tasks
    through a `file://` URL: the features of the same photos as files on the local engine."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    local, on_ray = dataset(tmp_path, "files"), dataset(tmp_path, "table")
    photos = sorted((on_ray / "images").iterdir())
    cells = [{"bytes": p.read_bytes(), "path": p.name} for p in photos]
    table = pa.table({"id": [p.stem for p in photos], "image": cells})
    pq.write_table(table, on_ray / "images.parquet", row_group_size=4)
    path = config(on_ray, models, False, engine="ray", ray_workers=2)
    data = yaml.safe_load(path.read_text())
    url = (on_ray / "images.parquet").as_uri()
    data["visual_textual"]["items"]["input_path"]["visual"] = url
    path.write_text(yaml.safe_dump(data))
    shutil.rmtree(on_ray / "images")
    extract_config(config(local, models, False), options=QUIET)
    results = extract_config(path, options=QUIET)
    assert [r.metrics["items"] for r in results] == [8, 8]  # photos (and the broken one), texts
    assert_same_outputs(on_ray, local)
    (failure,) = read_failures(on_ray / "v" / "failures.tsv")
    assert (failure.item_id, failure.path, failure.stage) == ("broken", f"{url}:1", "decode")
