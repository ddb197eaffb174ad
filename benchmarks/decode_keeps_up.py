"""Does decoding keep up with fast inference? EfficientNet-Lite0 (real weights) on OpenVINO bf16
over the large H&M photos, exact vs --jpeg-draft, decode workers 1 vs 2, inference threads 1 vs 2.

    PYTHONPATH=. python benchmarks/decode_keeps_up.py [--items 400] [--rounds 3]

Each setting runs the whole `extract` (fresh output) on the 100 photos tiled to `--items`
(symlinks), the settings interleaved round by round; prints, per setting, the medians of the
items/s over the whole run and after the first batch, and of the share of inference time spent
waiting for decoded batches (`inference_wait_share`), with the load before each round, the CPU
and its ISA flags, as JSON. Draft runs pass `min_cosine=0.5` so the draft gate (which switches
draft off for Lite0 on these photos: see engine/draft_gate.py) leaves it on, to time it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.bench.machine import machine_info

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "hm-fashion-sample"


def tiled(folder: Path, count: int) -> Path:
    photos = sorted((PHOTOS / "original" / "images").glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        source = photos[i % len(photos)]
        (folder / f"{source.stem}-{i // len(photos)}.jpg").symlink_to(source)
    return folder


def run_once(model: Path, images: Path, out: Path, cache: Path, setting: dict) -> dict:
    options = RunOptions(
        runtime="openvino",
        precision="bf16",
        progress=False,
        trust_pickle=True,
        cache_dir=cache,
        workers=setting["workers"],
        threads=setting["threads"],
        jpeg_draft=setting["draft"],
        min_cosine=0.5 if setting["draft"] else None,
        overwrite=True,
    )
    metrics = extract_single(
        SingleModelJob(str(model), out, images=images, batch_size=32), options
    )[0].metrics
    return {
        "items_per_s": metrics["items_per_s"],
        "steady_items_per_s": metrics["items_per_s_after_startup"],
        "inference_wait_share": metrics["inference_wait_share"],
    }


def main() -> None:
    from ducho_fast.bench.efficientnet_lite import save_feature_pickle

    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "decode-keeps-up"
    )
    args = parser.parse_args()
    cache = args.cache
    model = save_feature_pickle(cache / "efficientnet-lite0.pt")
    work = Path(tempfile.mkdtemp(prefix="decode-keeps-up-"))
    images = tiled(work / "images", args.items)
    settings = [
        {"draft": d, "workers": w, "threads": t}
        for d, w, t in itertools.product((False, True), (1, 2), (1, 2))
    ]
    run_once(model, images, work / "warm", cache, settings[0])  # export and compile once
    runs: dict[str, list[dict]] = {}
    loads = []
    for _ in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for setting in settings:
            name = "{}, workers {}, threads {}".format(
                "draft" if setting["draft"] else "exact", setting["workers"], setting["threads"]
            )
            runs.setdefault(name, []).append(run_once(model, images, work / "out", cache, setting))
    found = {
        name: {key: round(statistics.median(r[key] for r in got), 3) for key in got[0]}
        for name, got in runs.items()
    }
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"items": args.items, "rounds": args.rounds, "load_1min_before_rounds": loads,
                      "settings": found, **machine_info()}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
