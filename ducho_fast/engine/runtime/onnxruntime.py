"""ONNX Runtime session that never falls back silently to another execution provider."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import RuntimeUnavailableError

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@dataclass(frozen=True)
class OrtOptions:
    """Session settings. `intra_op_threads=0` lets ORT use every core."""

    providers: tuple[str, ...] = ("cpu",)
    intra_op_threads: int = 0
    inter_op_threads: int = 1
    graph_optimization: str = "all"
    enable_mem_pattern: bool = True
    enable_cpu_mem_arena: bool = True


def provider_names(providers: Sequence[str]) -> list[str]:
    return [PROVIDER_ALIASES.get(p.lower(), p) for p in providers]


def make_session_options(options: OrtOptions):
    import onnxruntime as ort

    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[options.graph_optimization]
    so.intra_op_num_threads = options.intra_op_threads
    so.inter_op_num_threads = options.inter_op_threads
    so.enable_mem_pattern = options.enable_mem_pattern
    so.enable_cpu_mem_arena = options.enable_cpu_mem_arena
    so.log_severity_level = 3
    return so


class OrtSession:
    """Runs one ONNX graph; raises if a requested provider is not the one actually in use."""

    def __init__(self, model_path: Path | str, options: OrtOptions = OrtOptions()):
        import onnxruntime as ort

        requested = provider_names(options.providers)
        available = ort.get_available_providers()
        missing = [p for p in requested if p not in available]
        if missing:
            raise RuntimeUnavailableError(
                f"ONNX Runtime provider(s) {missing} are not available here (available: "
                f"{available}). Install onnxruntime-gpu for CUDA/TensorRT (see README)."
            )
        self._session = ort.InferenceSession(
            str(model_path), sess_options=make_session_options(options), providers=requested
        )
        active = self._session.get_providers()
        if requested[0] not in active:
            raise RuntimeUnavailableError(
                f"asked for {requested[0]} but ONNX Runtime runs on {active}: refusing the silent "
                "fallback (is a GPU visible, with matching CUDA/cuDNN libraries?)"
            )
        self.providers = tuple(active)
        self.input_names = tuple(i.name for i in self._session.get_inputs())
        self.output_names = tuple(o.name for o in self._session.get_outputs())

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: inputs[name] for name in self.input_names}
        values = self._session.run(list(self.output_names), feed)
        return dict(zip(self.output_names, values, strict=True))
