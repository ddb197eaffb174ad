"""OpenVINO on the CPU, reading the same ONNX artifacts as ONNX Runtime.

The inference precision is always set explicitly: OpenVINO's CPU plugin otherwise picks bf16
by itself on CPUs with AMX, which would make "fp32" silently not fp32. bf16 runs the fp32
graph with OpenVINO's bf16 precision hint and must pass a fidelity gate against fp32 (see
`resolve`). Compiled models are cached per CPU under the cache folder (OpenVINO keys each
blob by the model, the device and these settings), so a second run skips compilation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ducho_fast.core.errors import RuntimeUnavailableError

INSTALL_HINT = "install it with `pip install ducho-fast[cpu]` (or `pip install openvino`)"
# int8: the static QDQ graph runs its quantized nodes in int8 and the rest in fp32.
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeUnavailableError(f"OpenVINO is not installed: {INSTALL_HINT}") from exc
    return openvino


def writable_dir(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def compile_config(precision: str, threads: int) -> dict[str, str]:
    """One stream using every core (or `threads`), the batch in one request. Measured against
    OpenVINO's THROUGHPUT hint with 2 streams fed the batch in halves through async requests
    (AMD EPYC, 2 cores, batch 32, interleaved medians): 0.99-1.03x on MiniLM, a CLIP image
    tower, ResNet-50 and EfficientNet-Lite0 at f32 and bf16, so the simpler form stays
    (benchmarks/results/vm-2026-12-02-ov-streams)."""
    config = {
        "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
    }
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return config


class OpenVinoSession:
    """Runs one graph of an artifact with OpenVINO; same surface as every other session."""

    def __init__(
        self,
        model_path: Path,
        output_names: tuple[str, ...],
        precision: str,
        threads: int = 0,
        cache_dir: Path | None = None,
    ):
        ov = import_openvino()
        core = ov.Core()
        if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") and (
            precision == "bf16"
        ):
            raise RuntimeUnavailableError("this CPU has no native bf16 instructions; use fp32")
        if cache_dir is not None and writable_dir(cache_dir):  # else: compile every time
            core.set_property({"CACHE_DIR": str(cache_dir)})
        self.compiled = core.compile_model(
            str(model_path), "CPU", compile_config(precision, threads)
        )
        self.request = self.compiled.create_infer_request()
        self.input_names = tuple(port.get_any_name() for port in self.compiled.inputs)
        self.output_names = output_names
        # A port may carry several tensor names (its ONNX name and an internal one).
        self.ports = [port_named(self.compiled.outputs, name) for name in output_names]

    def inference_precision(self) -> str:
        """What the compiled model really runs at (checked by the tests, never assumed)."""
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: np.ascontiguousarray(inputs[name]) for name in self.input_names}
        results = self.request.infer(feed)
        return {
            name: np.array(results[port], dtype=np.float32, copy=True)
            for name, port in zip(self.output_names, self.ports, strict=True)
        }


def port_named(ports: Any, name: str) -> Any:
    for port in ports:
        if name in port.get_names():
            return port
    known = [sorted(port.get_names()) for port in ports]
    raise RuntimeUnavailableError(f"OpenVINO's model has no output {name!r} (it has {known})")
