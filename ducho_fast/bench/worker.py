"""One end-to-end run in a fresh process, so start-up and peak memory are its own.

    python -m ducho_fast.bench.worker '<json>'

The JSON names the mode (`ducho-fast` or a baseline), the model, the data and the output; the
last stdout line is a JSON object with the run's metrics, peak memory (this process's
high-water mark, and the sampled peak of its decode workers' unique memory) and the wall-clock
times of its first batch (the parent subtracts its launch time to get command start-up).
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from pathlib import Path


def own_peak_mib() -> float:
    """This process's resident high-water mark. Not ru_maxrss: Linux carries that across
    exec, so a child of a large parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class ChildMemory:
    """Samples the unique memory of this process's children (decode workers) in a thread."""

    def __init__(self, interval_s: float = 0.25):
        self.interval_s = interval_s
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.interval_s):
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_full_info().uss
                except psutil.Error:
                    continue
            self.peak_mib = max(self.peak_mib, total / 2**20)

    def __enter__(self) -> ChildMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_ducho_fast(spec: dict) -> dict:
    from ducho_fast.api import RunOptions, SingleModelJob, extract_single

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
        trust_pickle=spec.get("trust_pickle", False),
        threads=spec.get("threads") or None,
        engine=spec.get("engine"),
        ray_workers=spec.get("ray_workers"),
        progress=False,
    )
    (result,) = extract_single(job, options)
    return result.metrics


def spec_items(spec: dict):
    """The items a job's spec names (the bench's own listing of its data set)."""
    from ducho_fast.bench.config import bench_items

    keys = ("kind", "images", "texts", "id_column", "text_column")
    return bench_items(*(spec[k] for k in keys), spec.get("limit"))


def run_reference(spec: dict) -> dict:
    from ducho_fast.bench.baseline import BaselineJob, run_baseline

    job = BaselineJob(
        model=spec["model"],
        kind=spec["kind"],
        output=Path(spec["output"]),
        batch_size=spec["batch_size"],
        workers=spec["workers"],
        weights=spec["weights"],
        flavour=spec["mode"],
    )
    items = spec_items(spec)
    return run_baseline(job, items)


def run_peer(spec: dict) -> dict:
    """A peer as its user would script it: read, encode, save features.npy + ids.txt."""
    import numpy as np

    from ducho_fast.bench.peers import PEERS
    from ducho_fast.core.metrics import StageTimer

    timer = StageTimer()
    items = spec_items(spec)
    model = PEERS.lookup(spec["peer"]).open(spec["model"], spec["batch_size"], Path(spec["work"]))
    if spec["kind"] == "text":
        ids, rows = peer_texts(model, items, timer)
    else:
        ids, rows = peer_images(model, items, spec, timer)
    output = Path(spec["output"])
    output.mkdir(parents=True, exist_ok=True)
    with timer.stage("write"):
        np.save(output / "features.npy", rows)
        (output / "ids.txt").write_text("\n".join(ids) + "\n")
    return timer.summary()


def peer_texts(model, items, timer) -> tuple[list[str], object]:
    texts = [item.text or "" for item in items]
    timer.mark_first_input()
    with timer.stage("inference"):
        rows = model.infer(model.prepare(texts))
    timer.count(len(texts))
    return [item.item_id for item in items], rows


def peer_images(model, items, spec: dict, timer) -> tuple[list[str], object]:
    """A DataLoader with the run's worker count decodes and preprocesses, as scripts do."""
    import numpy as np
    import torch

    from ducho_fast.core.image import decode_image

    class Images(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, index: int):
            return index, model.preprocess(decode_image(items[index].path))

    loader = torch.utils.data.DataLoader(
        Images(), batch_size=spec["batch_size"], num_workers=spec["workers"]
    )
    ids, parts = [], []
    waited = time.perf_counter()
    for indices, pixels in loader:
        timer.add("wait_for_input", time.perf_counter() - waited)
        timer.mark_first_input()
        with timer.stage("inference"):
            parts.append(model.infer_batch(pixels))
        timer.count(len(indices))
        ids += [items[i].item_id for i in indices.tolist()]
        waited = time.perf_counter()
    return ids, np.concatenate(parts)


def main() -> None:
    spec = json.loads(sys.argv[1])
    runners = {"ducho-fast": run_ducho_fast, "peer": run_peer}
    with ChildMemory() as children:
        metrics = runners.get(spec["mode"], run_reference)(spec)
    memory = {"peak_rss_mib": own_peak_mib(), "peak_worker_rss_mib": children.peak_mib}
    print(json.dumps({**metrics, **memory}))


if __name__ == "__main__":
    main()
