"""One process per GPU (Ducho's `gpu list`), tested with fakes: there is no GPU here.

The workers run the pass on the CPU; what is checked is the assignment a GPU run depends on:
each worker was born with CUDA_VISIBLE_DEVICES set to its own GPU (no two on one GPU, none left
on the parent's list), every pending shard ran exactly once, and one writer committed the same
files as the local engine.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from ducho_fast import ducho_plan
from ducho_fast.config import load_config
from ducho_fast.ducho_plan import build_plan
from ducho_fast.engine.executors import EXECUTORS, EngineOptions
from ducho_fast.modalities.image import synthetic_images
from ducho_fast.runner import extract_plan


def visual_config(root: Path, model: Path, **keys) -> Path:
    (root / "images").mkdir(parents=True)
    for index, pixels in enumerate(synthetic_images(9, (90, 120), seed=4)):
        Image.fromarray(pixels).save(root / "images" / f"p{index}.jpg", quality=90)
    data = {
        "dataset_path": str(root),
        "shard_size": 2,
        "workers": 0,
        "output_format": "compact",
        "visual": {
            "items": {
                "input_path": "images",
                "output_path": "out",
                "model": [
                    {
                        "model_name": str(model),
                        "backend": "transformers",
                        "output_layers": 1,
                        "batch_size": 2,
                    }
                ],
            }
        },
        **keys,
    }
    path = root / "config.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def compact(root: Path) -> tuple[list[str], np.ndarray]:
    folder = next(root.rglob("features.npy")).parent
    return (folder / "ids.txt").read_text().split(), np.load(folder / "features.npy")


def test_each_gpu_gets_its_own_process_and_every_shard_runs_once(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")  # as `gpu list` leaves it
    runs = {}
    for engine in ("local", "gpus"):
        root = tmp_path / engine
        plan = build_plan(load_config(visual_config(root, tiny_clip)), root)
        if engine == "gpus":
            plan = replace(plan, executor="gpus", engine=EngineOptions(gpus=(2, 3)))
        extract_plan(plan, progress=False)
        runs[engine] = compact(root)
    workers = EXECUTORS["gpus"].workers
    assert sorted(w.visible for w in workers) == ["2", "3"]  # each saw only its own GPU
    assert len({w.pid for w in workers}) == 2
    ran = sorted(shard for w in workers for shard in w.shards)
    assert ran == [0, 1, 2, 3, 4]  # 9 items in shards of 2: each shard once
    assert runs["gpus"][0] == runs["local"][0]
    np.testing.assert_allclose(runs["gpus"][1], runs["local"][1], rtol=1e-5, atol=1e-6)


def test_a_gpu_list_of_several_gpus_plans_one_process_per_gpu(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(ducho_plan, "available_providers", lambda: ["CUDAExecutionProvider"])
    path = visual_config(tmp_path / "two", tiny_clip, **{"gpu list": "0,1"})
    plan = build_plan(load_config(path), path.parent)
    assert (plan.executor, plan.engine.gpus) == ("gpus", (0, 1))
    path = visual_config(tmp_path / "one", tiny_clip, **{"gpu list": "1"})
    assert build_plan(load_config(path), path.parent).executor == "local"


def test_without_a_gpu_provider_the_gpu_list_runs_here(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(ducho_plan, "available_providers", lambda: ["CPUExecutionProvider"])
    path = visual_config(tmp_path / "cpu", tiny_clip, **{"gpu list": "0,1"})
    assert build_plan(load_config(path), path.parent).executor == "local"


def test_the_driver_opens_no_session_when_the_workers_run_the_model(
    tiny_clip, tmp_path, monkeypatch
):
    """Under `gpus` (and Ray) the workers run every batch: the driver reads the model's
    fingerprint and outputs from its artifact and opens no session, which on a GPU machine
    would sit on the first GPU. The spawned workers (fresh processes) open theirs."""
    from ducho_fast.runtime.table import RUNTIMES, runtime_spec

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    real = runtime_spec("onnxruntime")
    opened_here = []

    def counting_open(target, choice):
        opened_here.append(choice)
        return real.open(target, choice)

    monkeypatch.setitem(RUNTIMES, "onnxruntime", replace(real, open=counting_open))
    runs = {}
    for engine in ("local", "gpus"):
        root = tmp_path / engine
        config = visual_config(root, tiny_clip, runtime="onnxruntime")  # the runtime counted
        plan = build_plan(load_config(config), root)
        if engine == "gpus":
            plan = replace(plan, executor="gpus", engine=EngineOptions(gpus=(0, 1)))
        before = len(opened_here)
        extract_plan(plan, progress=False)
        runs[engine] = (len(opened_here) - before, compact(root))
    assert runs["local"][0] == 1  # the local engine runs its batches here
    assert runs["gpus"][0] == 0
    assert runs["gpus"][1][0] == runs["local"][1][0]
    np.testing.assert_allclose(runs["gpus"][1][1], runs["local"][1][1], rtol=1e-5, atol=1e-6)
