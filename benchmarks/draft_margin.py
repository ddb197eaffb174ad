"""How far `--jpeg-draft` may shrink a JPEG: feature cosine to exact decoding vs decode rate.

    PYTHONPATH=. python benchmarks/draft_margin.py [--limit 100]

For each decoded-side margin (decoded side >= margin x the model's largest input side; 1 is
libjpeg's smallest scale that still feeds the resize, 1/4 on the 1166x1750 H&M photos, 2 is
1/2 there), on the H&M photos: the min / 10th percentile / median cosine of EfficientNet-Lite0
(real ImageNet weights, torch fp32, one thread) features against exact decoding, under two
geometries (Lite0's Ducho preprocessing: bicubic to exactly 224x224; CLIP's: shortest side 224,
centre crop 224), and the decode + preprocess rate on one core (median of 3 passes, margins
interleaved). Prints JSON with the machine's load, CPU and ISA flags.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from ducho_fast.bench.machine import machine_info
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.core.image import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImagePreprocessSpec,
    decode_image,
    draft_side,
    normalize_pixels,
    preprocess_image,
)

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "hm-fashion-sample"
SPECS = {
    "lite0 (exact 224x224)": ImagePreprocessSpec(
        "exact", (224, 224), "bicubic", None, IMAGENET_MEAN, IMAGENET_STD, crop_rounding="round"
    ),
    "clip (shortest 224, crop 224)": ImagePreprocessSpec(
        "shortest_edge", 224, "bicubic", (224, 224), IMAGENET_MEAN, IMAGENET_STD
    ),
}
MARGINS = (None, 1.0, 2.0)  # None: exact decoding


def features(model, pixels: list[np.ndarray], spec: ImagePreprocessSpec) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(torch.from_numpy(normalize_pixels(np.stack(pixels), spec))).numpy()


def decode_rate(paths: list[Path], spec: ImagePreprocessSpec, side: int | None) -> float:
    start = time.perf_counter()
    for path in paths:
        preprocess_image(decode_image(path, side), spec)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    import torch

    from ducho_fast.bench.efficientnet_lite import real_lite0

    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    torch.set_num_threads(1)
    model = real_lite0()
    model._fc = torch.nn.Identity()
    paths = sorted((PHOTOS / "original" / "images").glob("*.jpg"))[: args.limit]
    found: dict[str, dict] = {}
    for name, spec in SPECS.items():
        sides = {m: draft_side([spec], m) if m else None for m in MARGINS}
        exact = features(model, [preprocess_image(decode_image(p), spec) for p in paths], spec)
        rates: dict[float | None, list[float]] = {m: [] for m in MARGINS}
        for _ in range(3):
            for margin, side in sides.items():
                rates[margin].append(decode_rate(paths, spec, side))
        for margin, side in sides.items():
            drafted = [decode_image(p, side) for p in paths]
            got = features(model, [preprocess_image(d, spec) for d in drafted], spec)
            cos = row_cosines(exact, got)
            found[f"{name}, margin {margin or 'exact'}"] = {
                "decoded": "x".join(map(str, drafted[0].size)),
                "min_cosine": round(float(cos.min()), 4),
                "p10_cosine": round(float(np.percentile(cos, 10)), 4),
                "median_cosine": round(float(np.median(cos)), 5),
                "worst": paths[int(cos.argmin())].name,
                "images_per_s_per_core": round(statistics.median(rates[margin]), 1),
            }
    print(json.dumps({"photos": len(paths), "margins": found, "load": os.getloadavg(),
                      **machine_info()}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
