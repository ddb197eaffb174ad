"""ONNX Runtime session that never falls back silently to another execution provider.

On GPU providers (CUDA, TensorRT) inputs and outputs go through IO binding, so ORT copies
each batch to the device once and hands back host arrays without per-run reallocation. Those
paths were written against the documented API but not run here (no GPU); the binding logic
itself is exercised on the CPU provider in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ducho_fast.core.errors import ConfigError, RuntimeUnavailableError

if TYPE_CHECKING:
    from ducho_fast.runtime.table import RuntimeChoice

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


@dataclass(frozen=True)
class OrtOptions:
    """Session settings. `intra_op_threads=0` lets ORT use every core."""

    providers: tuple[str, ...] = ("cpu",)
    provider_options: tuple[dict, ...] = ()  # one dict per provider, or empty
    io_binding: bool | None = None  # None: on for GPU providers, off for the CPU
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
            str(model_path),
            sess_options=make_session_options(options),
            providers=requested,
            provider_options=list(options.provider_options) or None,
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
        gpu = requested[0] != "CPUExecutionProvider"
        self.io_binding = gpu if options.io_binding is None else options.io_binding
        self.output_device = "cuda" if gpu else "cpu"

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.io_binding:
            return self.run_bound(inputs)
        feed = {name: inputs[name] for name in self.input_names}
        values = self._session.run(list(self.output_names), feed)
        return dict(zip(self.output_names, values, strict=True))

    def run_bound(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        binding = self._session.io_binding()
        for name in self.input_names:
            binding.bind_cpu_input(name, np.ascontiguousarray(inputs[name]))
        for name in self.output_names:
            binding.bind_output(name, self.output_device)
        self._session.run_with_iobinding(binding)
        values = binding.copy_outputs_to_cpu()
        return dict(zip(self.output_names, values, strict=True))


ORT_PROVIDERS = ("cpu", "cuda", "tensorrt")


def ort_options(choice: RuntimeChoice, precision: str) -> OrtOptions:
    """Execution providers in priority order, with the CPU last for nodes a GPU EP lacks."""
    if choice.ort_provider not in ORT_PROVIDERS:
        raise ConfigError(f"unknown ort_provider {choice.ort_provider!r}; use {ORT_PROVIDERS}")
    chains = {
        "cpu": (("cpu", {}),),
        "cuda": (("cuda", {}), ("cpu", {})),
        "tensorrt": (
            (
                "tensorrt",
                {
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(choice.cache / "ort-tensorrt"),
                    "trt_fp16_enable": str(precision == "fp16"),
                },
            ),
            ("cuda", {}),
            ("cpu", {}),
        ),
    }
    chain = chains[choice.ort_provider]
    return OrtOptions(
        providers=tuple(name for name, _ in chain),
        provider_options=tuple(options for _, options in chain),
        intra_op_threads=choice.threads,
    )
