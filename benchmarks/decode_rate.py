"""Per-core decode + preprocess rate (images/s on one core) for the Ray cost model.

    PYTHONPATH=. python benchmarks/decode_rate.py

Decodes each set's photos in this one process (one core), through the CLIP ViT-B/32
preprocessing (shortest side 224, centre crop 224), exact and with --jpeg-draft; prints the
median of 5 passes and the machine's load, as JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

from ducho_fast.bench.machine import machine_info
from ducho_fast.core.image import ImagePreprocessSpec, decode_image, draft_side, preprocess_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SETS = {
    "hm-fashion-sample (1166x1750 JPEG)": DATA / "hm-fashion-sample" / "original" / "images",
    "fashion-product-images (60x80 JPEG)": DATA / "fashion-product-images" / "sample_images",
}
SPEC = ImagePreprocessSpec(
    "shortest_edge", 224, "bicubic", (224, 224), (0.481, 0.458, 0.408), (0.269, 0.261, 0.276)
)  # CLIP ViT-B/32's


def rate(paths: list[Path], draft: int | None) -> float:
    start = time.perf_counter()
    for path in paths:
        preprocess_image(decode_image(path, draft), SPEC)
    return len(paths) / (time.perf_counter() - start)


def main() -> None:
    os.sched_setaffinity(0, {0})  # one core
    found = {}
    for name, folder in SETS.items():
        paths = sorted(folder.glob("*.jpg"))[:200]
        for label, draft in (("exact", None), ("jpeg_draft", draft_side([SPEC]))):
            runs = [rate(paths, draft) for _ in range(5)]
            found[f"{name}, {label}"] = round(statistics.median(runs), 1)
    print(json.dumps({"images_per_s_per_core": found, "load": os.getloadavg(), **machine_info()}))


if __name__ == "__main__":
    main()
