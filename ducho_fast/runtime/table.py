"""The runtime table: every way to run a tower, and what each one can do.

The CLI's choices, config validation, the bench and `ducho_fast.load` all read this table, so a
new runtime (OpenVINO, say) is one module with an `open` function plus one entry here. A
runtime either runs the eager PyTorch tower (`needs_artifact=False`) or an exported artifact's
graph; `resolve` hands it the one it needs. Heavy libraries are imported inside `open`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ducho_fast.core.cache import resolve_cache_dir
from ducho_fast.core.errors import ConfigError
from ducho_fast.core.table import Table
from ducho_fast.runtime.base import Session

EXPORT_PRECISIONS = ("fp32", "fp16", "int8")  # what an exported graph can hold


@dataclass(frozen=True)
class RuntimeChoice:
    """Which runtime, at which precision, with which threads (0: every core) and cache."""

    runtime: str = "onnxruntime"
    precision: str = "fp32"
    threads: int = 0
    cache_dir: Path | None = None  # None: $DUCHO_FAST_CACHE or ~/.cache/ducho-fast, at use
    ort_provider: str = "cpu"  # onnxruntime only: cpu, cuda or tensorrt (execution providers)

    def __post_init__(self) -> None:
        spec = runtime_spec(self.runtime)
        if self.precision not in spec.precisions:
            others = [r.name for r in RUNTIMES.values() if self.precision in r.precisions]
            raise ConfigError(
                f"runtime {self.runtime} runs {list(spec.precisions)}, not {self.precision}"
                + (f"; {self.precision} runs on {others}" if others else "")
            )

    @property
    def cache(self) -> Path:
        return resolve_cache_dir(self.cache_dir)

    @property
    def spec(self) -> RuntimeSpec:
        return runtime_spec(self.runtime)


@dataclass(frozen=True)
class EagerTower:
    """What an eager runtime opens: the tower's module and its named inputs and outputs."""

    module: Any
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


@dataclass(frozen=True)
class ArtifactGraph:
    """What an artifact runtime opens: one graph of a validated artifact folder."""

    folder: Path
    manifest: Any  # artifact.manifest.Manifest
    graph: str


@dataclass(frozen=True)
class RuntimeSpec:
    name: str
    precisions: tuple[str, ...]
    needs_artifact: bool
    open: Callable[[Any, RuntimeChoice], Session]
    summary: str
    # Precisions this runtime reaches by itself from the fp32 artifact (OpenVINO's bf16 hint).
    reduced: tuple[str, ...] = ()
    requires: str | None = None  # the module it imports (checked without importing it)
    # Precisions whose results `resolve` gates, before any item runs, against ONNX Runtime on
    # the same artifact graph (what the export validated against eager).
    gated: tuple[str, ...] = ()
    # Export settings this runtime needs per precision (OpenVINO int8: static QDQ, which it
    # runs with int8 kernels); part of the export cache key.
    export_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def unavailable(self) -> str | None:
        """Why this runtime cannot run here, or None."""
        if self.requires is not None and importlib.util.find_spec(self.requires) is None:
            return f"{self.requires} is not installed"
        return None

    def artifact_precision(self, precision: str) -> str:
        """The precision of the artifact this runtime runs for `precision`."""
        return "fp32" if precision in self.reduced else precision

    def export_settings(self, precision: str) -> dict[str, str]:
        return dict(self.export_options.get(precision, {}))


RUNTIMES: Table[RuntimeSpec] = Table("runtime", __name__)  # built-ins: at the end of this file
register_runtime = RUNTIMES.register
runtime_spec = RUNTIMES.lookup


def runtime_names() -> tuple[str, ...]:
    return tuple(RUNTIMES.names())


def all_precisions() -> tuple[str, ...]:
    return tuple(dict.fromkeys(p for spec in RUNTIMES.values() for p in spec.precisions))


# --- the built-in runtimes ------------------------------------------------------------------


def open_torch(target: EagerTower, choice: RuntimeChoice) -> Session:
    from ducho_fast.runtime.torch import TorchSession

    return TorchSession(
        target.module,
        target.input_names,
        target.output_names,
        compiled=choice.runtime == "torch-compile",
        threads=choice.threads or None,
        bf16=choice.precision == "bf16",
    )


def open_onnxruntime(target: ArtifactGraph, choice: RuntimeChoice) -> Session:
    from ducho_fast.runtime.onnxruntime import OrtSession, ort_options

    graph = target.manifest.graph(target.graph)
    return OrtSession(target.folder / graph.file, ort_options(choice, graph.precision))


def open_tensorrt(target: ArtifactGraph, choice: RuntimeChoice) -> Session:
    from ducho_fast.runtime.tensorrt import TensorRTSession

    return TensorRTSession.from_artifact(
        target.folder, target.manifest, target.graph, cache_dir=choice.cache / "tensorrt"
    )


def open_openvino(target: ArtifactGraph, choice: RuntimeChoice) -> Session:
    from ducho_fast.core.machine import machine_id
    from ducho_fast.runtime.openvino import OpenVinoSession

    graph = target.manifest.graph(target.graph)
    cache = choice.cache / "openvino" / machine_id()
    outputs = tuple(output.name for output in graph.outputs)
    path = target.folder / graph.file
    return OpenVinoSession(path, outputs, choice.precision, choice.threads, cache)


EAGER_PRECISIONS = ("fp32", "bf16")  # bf16: autocast on CPUs with native bf16 instructions
register_runtime(
    RuntimeSpec("torch", EAGER_PRECISIONS, False, open_torch, "eager PyTorch (Ducho's way)")
)
register_runtime(
    RuntimeSpec("torch-compile", EAGER_PRECISIONS, False, open_torch, "torch.compile (inductor)")
)
register_runtime(
    RuntimeSpec(
        "onnxruntime",
        EXPORT_PRECISIONS,
        True,
        open_onnxruntime,
        "ONNX Runtime on the artifact",
        requires="onnxruntime",
    )
)
register_runtime(
    RuntimeSpec(
        "tensorrt",
        EXPORT_PRECISIONS,
        True,
        open_tensorrt,
        "TensorRT engines (GPU)",
        requires="tensorrt",
    )
)
register_runtime(
    RuntimeSpec(
        "openvino",
        ("fp32", "bf16", "int8"),
        True,
        open_openvino,
        "OpenVINO on the artifact (bf16: its precision hint; int8: NNCF QDQ; both gated)",
        reduced=("bf16",),
        requires="openvino",
        gated=("bf16", "int8"),
        export_options={"int8": {"int8_mode": "nncf"}},
    )
)
