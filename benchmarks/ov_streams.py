"""OpenVINO: one LATENCY stream over the whole batch (what ducho-fast runs) against the
THROUGHPUT hint with 2 streams fed the batch in halves through async requests.

Interleaved rounds, medians, batch 32, on ONNX graphs of ducho-fast artifacts:

    .venv/bin/python benchmarks/ov_streams.py minilm=ART/text.onnx clip=ART/image.onnx \
        --output benchmarks/results/<machine>/ov-streams.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import openvino as ov

from ducho_fast.bench.machine import machine_info

BATCH = 32
ROUNDS = 5
TEXT_LENGTH = 48


def feed_for(model: ov.Model, batch: int) -> dict[str, np.ndarray]:
    """Images: uint8 NHWC pixels; texts: ids and a full mask of TEXT_LENGTH tokens."""
    rng = np.random.default_rng(0)
    feed = {}
    for port in model.inputs:
        name, shape = port.get_any_name(), port.get_partial_shape()
        if len(shape) == 4:
            dims = [batch] + [d.get_length() for d in list(shape)[1:]]
            feed[name] = rng.integers(0, 255, dims, dtype=np.uint8)
        else:
            ids = rng.integers(1000, 2000, (batch, TEXT_LENGTH)).astype(np.int64)
            feed[name] = np.ones_like(ids) if "mask" in name else ids
    return feed


def halves(feed: dict[str, np.ndarray], parts: int) -> list[dict[str, np.ndarray]]:
    rows = next(iter(feed.values())).shape[0]
    bounds = np.linspace(0, rows, parts + 1).astype(int)
    return [
        {k: np.ascontiguousarray(v[a:b]) for k, v in feed.items()}
        for a, b in itertools.pairwise(bounds)
    ]


def one_stream(core: ov.Core, path: str, precision: str, feed: dict):
    config = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    compiled = core.compile_model(path, "CPU", {**config, "INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()
    return lambda: request.infer(feed)


def streams(core: ov.Core, path: str, precision: str, feed: dict, count: int = 2):
    config = {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(count)}
    compiled = core.compile_model(path, "CPU", {**config, "INFERENCE_PRECISION_HINT": precision})
    queue, parts = ov.AsyncInferQueue(compiled, count), halves(feed, count)

    def run() -> None:
        for index, part in enumerate(parts):
            queue.start_async(part, index)
        queue.wait_all()

    return run


def measure(core: ov.Core, path: str, precision: str) -> dict:
    feed = feed_for(core.read_model(path), BATCH)
    runners = {
        "latency-1-stream": one_stream(core, path, precision, feed),
        "throughput-2-streams": streams(core, path, precision, feed),
    }
    for run in runners.values():
        run()
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(ROUNDS):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            rates[name].append(BATCH / (time.perf_counter() - start))
    medians = {name: float(np.median(values)) for name, values in rates.items()}
    ratio = medians["throughput-2-streams"] / medians["latency-1-stream"]
    return {"items_per_s": medians, "all": rates, "ratio_streams_to_latency": ratio}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graphs", nargs="+", help="label=path/to/graph.onnx")
    parser.add_argument("--output", type=Path, default=Path("ov-streams.json"))
    args = parser.parse_args()
    report = {"machine": machine_info(), "load_start": os.getloadavg(), "results": {}}
    core = ov.Core()
    for label, path in (graph.split("=", 1) for graph in args.graphs):
        for precision in ("f32", "bf16"):
            result = measure(core, path, precision)
            report["results"][f"{label}:{precision}"] = result
            print(
                label,
                precision,
                result["items_per_s"],
                round(result["ratio_streams_to_latency"], 3),
            )
    report["load_end"] = os.getloadavg()
    args.output.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
