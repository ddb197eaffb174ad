"""Eager PyTorch vs ONNX Runtime fp32 vs int8: pure inference items/s on the same inputs.

Runs a tiny CLIP and a ViT-B/32-sized CLIP (random weights: no hub here), both towers. Inputs
are preprocessed and in memory; runtimes are interleaved in every repetition so machine noise
hits them alike; medians and the min-max spread are reported.

    .venv/bin/python benchmarks/export_bench.py [--sizes tiny,vit-b-32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import ducho_fast
from ducho_fast.artifact.manifest import read_manifest
from ducho_fast.exporter.api import ExportConfig
from ducho_fast.exporter.onnx_export import eager_outputs
from ducho_fast.modalities.image import synthetic_images
from ducho_fast.modalities.text import synthetic_texts
from ducho_fast.models.registry import load_model
from ducho_fast.models.spec import ModelRef
from ducho_fast.models.synthetic import save_clip
from ducho_fast.runtime.onnxruntime import OrtSession

HERE = Path(__file__).resolve().parent


def inputs_for(tower, batch: int) -> dict[str, np.ndarray]:
    if tower.name == "image":
        return {"pixels": synthetic_images(batch, tower.image.input_size, seed=3)}
    texts = [t[:200] for t in synthetic_texts(batch, seed=3)]  # catalogue-like lengths
    encoded = tower.tokenizer(
        texts, padding=True, truncation=True, max_length=tower.text.max_length, return_tensors="np"
    )
    return {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


def runners(tower, artifacts: dict[str, Path]):
    yield "torch-eager", lambda x: eager_outputs(tower, x)
    for precision, folder in artifacts.items():
        session = OrtSession(folder / f"{tower.name}.onnx")
        yield f"onnxruntime-{precision}", session.run


def measure(tower, artifacts, batch: int, repeats: int) -> dict[str, dict]:
    x = inputs_for(tower, batch)
    named = dict(runners(tower, artifacts))
    for run in named.values():
        run(x)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in named}
    for _ in range(repeats):
        for name, run in named.items():
            start = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - start)
    return {
        name: {
            "items_per_s": batch / statistics.median(values),
            "min_items_per_s": batch / max(values),
            "max_items_per_s": batch / min(values),
        }
        for name, values in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="tiny,vit-b-32")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    results = {
        "machine": platform.node(),
        "processor": platform.processor(),
        "torch_threads": torch.get_num_threads(),
        "batch": args.batch,
        "models": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes.split(","):
            model_dir = save_clip(Path(tmp) / f"clip-{size}", size=size)
            artifacts = {}
            for precision in ("fp32", "int8"):
                folder = ducho_fast.export(
                    ExportConfig(
                        ModelRef(str(model_dir)),
                        Path(tmp) / f"{size}-{precision}",
                        precision=precision,
                    )
                )
                artifacts[precision] = folder
            modes = {g.name: g.quantization for g in read_manifest(artifacts["int8"]).graphs}
            loaded = load_model(ModelRef(str(model_dir)))
            for tower in loaded.towers:
                figures = measure(tower, artifacts, args.batch, args.repeats)
                results["models"][f"clip-{size}/{tower.name}"] = {
                    "int8_mode": modes[tower.name],
                    **figures,
                }
                print(f"clip-{size} {tower.name} (int8: {modes[tower.name]})")
                base = figures["torch-eager"]["items_per_s"]
                for name, fig in figures.items():
                    print(
                        f"  {name:22} {fig['items_per_s']:9.1f} items/s "
                        f"[{fig['min_items_per_s']:.1f}-{fig['max_items_per_s']:.1f}] "
                        f"x{fig['items_per_s'] / base:.2f} vs eager"
                    )
    out = HERE / "results" / platform.node()
    out.mkdir(parents=True, exist_ok=True)
    (out / "export_bench.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {out / 'export_bench.json'}")


if __name__ == "__main__":
    main()
