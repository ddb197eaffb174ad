"""End-to-end extraction of ../shared/data/hm-fashion-sample with a ViT-B/32-sized CLIP.

visual_textual (100 photos ~1166x1750 + their texts), torch eager vs ONNX Runtime fp32 (and
int8), alternating runtimes over repetitions; prints items/s and the per-stage summary.

    .venv/bin/python benchmarks/hm_extract.py [--repeats 3] [--runtimes torch,onnxruntime]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import yaml

from ducho_fast.api_extract import RunOptions, extract_config
from ducho_fast.models.synthetic import save_clip

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1] / "shared" / "data" / "hm-fashion-sample"


def config(dataset: Path, clip: Path, runtime: str, precision: str, cache: Path) -> dict:
    return {
        "dataset_path": str(dataset),
        "runtime": runtime,
        "precision": precision,
        "cache_dir": str(cache),
        "overwrite": True,
        "workers": 2,
        "visual_textual": {
            "items": {
                "input_path": {"visual": "images", "textual": "items.tsv"},
                "output_path": {"visual": "visual_embeddings", "textual": "textual_embeddings"},
                "item_column": "article_id",
                "text_column": "detail_desc",
                "model": [
                    {
                        "model_name": str(clip),
                        "backend": "transformers",
                        "output_layers": 1,
                        "batch_size": 32,
                    }
                ],
            }
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="torch:fp32,onnxruntime:fp32,onnxruntime:int8")
    args = parser.parse_args()
    variants = [tuple(v.split(":")) for v in args.variants.split(",")]
    runs: dict[str, list[dict]] = {f"{r}:{p}": [] for r, p in variants}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dataset = root / "data"
        dataset.mkdir()
        (dataset / "images").symlink_to(SHARED / "original" / "images")
        (dataset / "items.tsv").symlink_to(SHARED / "items_with_image.tsv")
        clip = save_clip(root / "clip-vit-b-32", size="vit-b-32")
        for repeat in range(args.repeats + 1):  # the first round warms caches and exports
            for runtime, precision in variants:
                path = root / "config.yml"
                path.write_text(
                    yaml.safe_dump(config(dataset, clip, runtime, precision, root / "cache"))
                )
                results = extract_config(path, options=RunOptions(progress=False))
                if repeat == 0:
                    continue
                items = sum(r.succeeded for r in results)
                seconds = sum(r.metrics["wall_seconds"] for r in results)
                stages: dict[str, float] = {}
                for r in results:
                    for k, v in r.metrics["stage_seconds"].items():
                        stages[k] = stages.get(k, 0.0) + v
                runs[f"{runtime}:{precision}"].append(
                    {
                        "items_per_s": items / seconds,
                        "seconds": seconds,
                        "stages": stages,
                        "per_pass": {r.name: r.metrics for r in results},
                    }
                )
    summary = {}
    for name, values in runs.items():
        median = statistics.median(v["items_per_s"] for v in values)
        summary[name] = {"median_items_per_s": median, "runs": values}
        best = min(values, key=lambda v: abs(v["items_per_s"] - median))
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(best["stages"].items()))
        print(f"{name:20} {median:7.1f} items/s (image+text items, end to end)  [{stages}]")
        for pass_name, m in best["per_pass"].items():
            print(
                f"    {pass_name:32} {m['items_per_s']:7.1f} items/s, inference waited "
                f"{100 * m['inference_wait_share']:.0f}%"
            )
    out = HERE / "results" / platform.node()
    out.mkdir(parents=True, exist_ok=True)
    (out / "hm_extract.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
