"""The four seams: a modality, a runtime, a sink or an executor is one module plus one table
entry. Each toy below is the whole of such a module, registered for one test only."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.config import load_config
from ducho_fast.core.errors import ConfigError
from ducho_fast.ducho_plan import build_plan
from ducho_fast.engine.executors import EXECUTORS, PreparedPass, get_executor
from ducho_fast.engine.pipeline import ShardAssembler, infer
from ducho_fast.engine.sinks import SINKS, get_sink, sinks_for
from ducho_fast.modalities import MODALITIES, modality, register
from ducho_fast.runner import extract_plan
from ducho_fast.runtime.onnxruntime import OrtOptions, OrtSession
from ducho_fast.runtime.table import (
    EXPORT_PRECISIONS,
    RUNTIMES,
    ArtifactGraph,
    RuntimeChoice,
    RuntimeSpec,
    runtime_spec,
)

# --- three toy modules ------------------------------------------------------------------------


class TsvSink:
    """A text layout: one `id<TAB>v1,v2,...` line per item."""

    name = "tsv"
    layout = "fast"

    def write_shard(self, folder, ids, features):
        """Nothing per shard: `finalize` reads the engine's committed shards."""

    def finalize(self, folder, ids, read_shards, manifest, fp16):
        rows = np.concatenate(list(read_shards())) if ids else np.empty((0, 0))
        lines = [
            f"{i}\t{','.join(repr(float(v)) for v in row)}"
            for i, row in zip(ids, rows, strict=True)
        ]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "features.tsv").write_text("\n".join(lines) + "\n")


def open_single_thread_ort(target: ArtifactGraph, choice: RuntimeChoice) -> OrtSession:
    """ONNX Runtime on one intra-op thread: the shape of a new artifact runtime (OpenVINO)."""
    graph = target.manifest.graph(target.graph)
    return OrtSession(target.folder / graph.file, OrtOptions(intra_op_threads=1))


class InlineExecutor:
    """Every batch on the calling thread: the shape of a new engine (Ray)."""

    name = "inline"

    def __init__(self):
        self.passes: list[str] = []

    def run(self, prepared: PreparedPass, progress: bool) -> None:
        self.passes.append(prepared.name)
        assembler = ShardAssembler(prepared.store, prepared.listing.items, prepared.timer)
        options = replace(prepared.options, pipelined=False, workers=0)
        feeds, shards = prepared.feeds, prepared.shards
        for batch in prepared.modality.batches(
            prepared.listing.items, feeds, shards, options, prepared.timer
        ):
            assembler.add(batch, infer(batch, prepared.jobs, prepared.timer))


# --- fixtures ---------------------------------------------------------------------------------


def compact(out: Path) -> tuple[list[str], np.ndarray]:
    folder = next(out.rglob("features.npy")).parent
    return (folder / "ids.txt").read_text().split(), np.load(folder / "features.npy")


# --- the seams --------------------------------------------------------------------------------


def test_a_new_sink_is_one_module_and_one_entry(tiny_clip, jpeg_photos, tmp_path, monkeypatch):
    monkeypatch.setitem(SINKS, "tsv", TsvSink())
    job = SingleModelJob(str(tiny_clip), tmp_path / "out", images=jpeg_photos, batch_size=2)
    extract_single(job, RunOptions(output_format="compact,tsv", progress=False, workers=0))
    ids, features = compact(tmp_path / "out")
    lines = next((tmp_path / "out").rglob("features.tsv")).read_text().split("\n")[:-1]
    assert [line.split("\t")[0] for line in lines] == ids
    parsed = np.array([[float(v) for v in line.split("\t")[1].split(",")] for line in lines])
    np.testing.assert_array_equal(parsed.astype(np.float32), features)


def test_a_new_runtime_is_one_module_and_one_entry(tiny_clip, jpeg_photos, tmp_path, monkeypatch):
    spec = RuntimeSpec("ort-1", EXPORT_PRECISIONS, True, open_single_thread_ort, "toy")
    monkeypatch.setitem(RUNTIMES, "ort-1", spec)
    features = {}
    for runtime in ("onnxruntime", "ort-1"):
        job = SingleModelJob(str(tiny_clip), tmp_path / runtime, images=jpeg_photos)
        options = RunOptions(runtime=runtime, progress=False, workers=0)
        (result,) = extract_single(replace(job, batch_size=2), options)
        assert result.succeeded == 6
        features[runtime] = compact(tmp_path / runtime)
        manifest = next((tmp_path / runtime).rglob("manifest.json")).read_text()
        assert f'"runtime": "{runtime}"' in manifest
    assert features["onnxruntime"][0] == features["ort-1"][0]
    np.testing.assert_allclose(features["onnxruntime"][1], features["ort-1"][1], atol=1e-5)


def test_a_new_executor_is_one_module_and_one_entry(tiny_clip, jpeg_photos, tmp_path, monkeypatch):
    inline = InlineExecutor()
    monkeypatch.setitem(EXECUTORS, "inline", inline)
    runs = {}
    for executor in ("inline", "local"):
        dataset = tmp_path / executor
        plan = build_plan(load_config(visual_config(dataset, jpeg_photos, tiny_clip)), dataset)
        extract_plan(replace(plan, executor=executor), progress=False)
        runs[executor] = compact(dataset / "ducho-fast")
    assert inline.passes == ["visual/items"]
    assert runs["inline"][0] == runs["local"][0]
    np.testing.assert_array_equal(runs["inline"][1], runs["local"][1])


def visual_config(dataset: Path, photos: Path, model: Path) -> Path:
    dataset.mkdir()
    config = {
        "dataset_path": str(dataset),
        "runtime": "torch",
        "visual": {
            "items": {
                "input_path": str(photos),
                "output_path": "visual",
                "model": [{"model_name": str(model), "backend": "transformers", "batch_size": 2}],
            }
        },
    }
    path = dataset / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_plans_are_picklable_for_other_processes(tiny_clip, jpeg_photos, tmp_path):
    config = {
        "dataset_path": str(tmp_path),
        "textual": {
            "items": {
                "input_path": str(write_texts(tmp_path)),
                "output_path": "textual",
                "item_column": "id",
                "text_column": "text",
                "model": [
                    {"model_name": str(tiny_clip), "backend": "transformers", "clear_text": True}
                ],
            }
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    plan = build_plan(load_config(path), tmp_path)
    copy = pickle.loads(pickle.dumps(plan))
    assert copy.passes[0].list_items().items == plan.passes[0].list_items().items


def write_texts(folder: Path) -> Path:
    path = folder / "items.tsv"
    path.write_text("id\ttext\na\tRed dress, size 38!\nb\tBlue sneakers\n")
    return path


# --- the tables name what they know ------------------------------------------------------------


def test_unknown_names_list_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown modality 'video'; use one of \['image'"):
        modality("video")
    with pytest.raises(ConfigError, match="unknown runtime 'tvm'; use one of"):
        runtime_spec("tvm")
    with pytest.raises(ConfigError, match=r"unknown output format 'hdf5'; use one of \['ducho'"):
        get_sink("hdf5")
    with pytest.raises(ConfigError, match=r"unknown executor 'spark'; use one of \['local'"):
        get_executor("spark")
    assert sinks_for("both") == ("ducho", "compact")
    with pytest.raises(ValueError, match="registered twice"):
        register(MODALITIES["image"])


def test_a_runtime_choice_names_where_a_precision_runs():
    with pytest.raises(ConfigError, match=r"runs \['fp32', 'bf16'\], not int8; int8 runs on"):
        RuntimeChoice("torch", "int8")
    assert RuntimeChoice("onnxruntime", "int8").spec.needs_artifact
    assert not RuntimeChoice("torch", "bf16").spec.needs_artifact


def test_a_sink_added_or_emptied_on_a_rerun_is_filled_from_the_engine(
    tiny_clip, jpeg_photos, tmp_path
):
    """Resuming a finished run with another sink, or after its folder was deleted, writes
    every committed item there (from the engine's features), never a silent empty folder."""
    import shutil

    job = SingleModelJob(str(tiny_clip), tmp_path / "out", images=jpeg_photos, batch_size=4)
    extract_single(job, RunOptions(output_format="compact", progress=False, workers=0))
    extract_single(job, RunOptions(output_format="both", progress=False, workers=0))
    ids, features = compact(tmp_path / "out")
    ducho = next((tmp_path / "out" / "ducho").rglob("p0.npy")).parent
    assert sorted(p.stem for p in ducho.glob("*.npy")) == sorted(ids)
    shutil.rmtree(ducho)
    extract_single(job, RunOptions(output_format="both", progress=False, workers=0))
    for row, item in enumerate(ids):
        np.testing.assert_array_equal(np.load(ducho / f"{item}.npy"), features[row : row + 1])
