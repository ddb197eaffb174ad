"""One end-to-end run in a fresh process, so start-up and peak memory are its own.

    python -m ducho_fast.bench.worker '<json>'

The JSON names the mode (`ducho-fast` or a baseline), the model, the data and the output; the
last stdout line is a JSON object with the run's metrics, peak memory and the wall-clock time
of its first batch (the parent subtracts its launch time to get command start-up).
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def peak_memory() -> dict[str, float]:
    """Peak resident memory in MiB (Linux reports KiB) of this process and of its children."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mib": own, "peak_worker_rss_mib": children}


def items_of(spec: dict):
    from ..engine.sources import list_images, list_texts

    if spec["kind"] == "image":
        listing = list_images(Path(spec["images"]))
    else:
        listing = list_texts(Path(spec["texts"]), spec["id_column"], (spec["text_column"],))
    items = listing.items[: spec["limit"]] if spec.get("limit") else listing.items
    return items


def run_ducho_fast(spec: dict) -> dict:
    from ..api_extract import RunOptions, SingleModelJob, extract_single

    kind = spec["kind"]
    job = SingleModelJob(
        model=spec["model"],
        output=Path(spec["output"]),
        images=Path(spec["images"]) if kind == "image" else None,
        texts=Path(spec["texts"]) if kind == "text" else None,
        id_column=spec["id_column"],
        text_column=spec["text_column"],
        batch_size=spec["batch_size"],
        weights=spec["weights"],
        limit=spec.get("limit"),
    )
    options = RunOptions(
        runtime=spec["runtime"],
        precision=spec["precision"],
        workers=spec["workers"],
        output_format="compact",
        overwrite=True,
        jpeg_draft=spec.get("jpeg_draft", False),
        progress=False,
    )
    (result,) = extract_single(job, options)
    return result.metrics


def run_reference(spec: dict) -> dict:
    from .baseline import BaselineJob, run_baseline

    job = BaselineJob(
        model=spec["model"],
        kind=spec["kind"],
        output=Path(spec["output"]),
        batch_size=spec["batch_size"],
        workers=spec["workers"],
        weights=spec["weights"],
        flavour=spec["mode"],
    )
    return run_baseline(job, items_of(spec))


def main() -> None:
    spec = json.loads(sys.argv[1])
    metrics = run_ducho_fast(spec) if spec["mode"] == "ducho-fast" else run_reference(spec)
    print(json.dumps({**metrics, **peak_memory()}))


if __name__ == "__main__":
    main()
