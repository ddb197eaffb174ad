"""TensorRT engines inside an artifact: built at export, recorded and hashed in the manifest.

The manifest's `tensorrt` section says which GPU and TensorRT version built the engines, so a
runtime on another machine can tell they are not for it (and build its own) instead of
failing inside TensorRT's deserializer.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from .manifest import Manifest, hash_folder, write_manifest
from .tensorrt import (
    GpuInfo,
    ProfileSpec,
    Serializer,
    ShapeRange,
    build_engine,
    check_int8_graph,
    default_cache_dir,
    gpu_info,
    resolve_profile,
    tensorrt_version,
)

TENSORRT_SCHEMA = 1


@dataclass(frozen=True)
class EngineRecord:
    """One graph's engine as the manifest records it."""

    graph: str
    file: str
    precision: str
    key: str
    profile: dict[str, int | None]
    shapes: dict[str, ShapeRange]

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "precision": self.precision,
            "key": self.key,
            "profile": self.profile,
            "shapes": {name: shape.to_dict() for name, shape in self.shapes.items()},
        }

    @classmethod
    def from_dict(cls, graph: str, data: Mapping[str, Any]) -> EngineRecord:
        shapes = {name: ShapeRange.from_dict(s) for name, s in data["shapes"].items()}
        return cls(graph, data["file"], data["precision"], data["key"], data["profile"], shapes)


@dataclass(frozen=True)
class TensorRTSection:
    """The manifest's `tensorrt` entry: who built the engines, and the engines."""

    version: str
    gpu: GpuInfo
    engines: dict[str, EngineRecord]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": TENSORRT_SCHEMA,
            "version": self.version,
            "gpu": self.gpu.to_dict(),
            "engines": {name: record.to_dict() for name, record in self.engines.items()},
        }

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> TensorRTSection | None:
        data = manifest.tensorrt
        if not data:
            return None
        try:
            engines = {g: EngineRecord.from_dict(g, e) for g, e in data["engines"].items()}
            return cls(str(data["version"]), GpuInfo.from_dict(data["gpu"]), engines)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"the manifest's tensorrt section is malformed: {exc!r}") from exc

    def engine_for(self, graph: str, version: str, gpu: GpuInfo) -> EngineRecord | None:
        """The recorded engine if it was built by this TensorRT for this GPU architecture."""
        if self.version != version or self.gpu.compute_capability != gpu.compute_capability:
            return None
        return self.engines.get(graph)


def check_tensorrt_available() -> None:
    """Raise RuntimeUnavailableError now if TensorRT or a CUDA GPU is missing."""
    tensorrt_version()
    gpu_info()


def add_tensorrt_engines(
    staging: Path,
    manifest: Manifest,
    profile: ProfileSpec | None = None,
    cache_dir: Path | None = None,
    serialize: Serializer | None = None,
) -> Manifest:
    """Build one engine per graph into `staging`, record them, rewrite the manifest (hashes
    included) and return it. Raises before building anything when TensorRT, the GPU or an
    int8 graph's format rules it out, so a failed export leaves nothing half done."""
    staging = Path(staging)
    version = tensorrt_version()
    gpu = gpu_info()
    for graph in manifest.graphs:
        if graph.precision == "int8":
            check_int8_graph(staging / graph.file)
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    engines = {}
    for graph in manifest.graphs:
        spec = resolve_profile(profile or ProfileSpec(), graph)
        built = build_engine(
            staging / graph.file,
            spec,
            graph.precision,
            cache,
            gpu=gpu,
            trt_version=version,
            serialize=serialize,
        )
        file = f"{graph.name}.engine"
        shutil.copyfile(built.path, staging / file)
        engines[graph.name] = EngineRecord(
            graph.name, file, built.precision, built.key, spec.to_dict(), built.shapes
        )
    section = TensorRTSection(version, gpu, engines)
    updated = Manifest.model_validate(
        {
            **manifest.model_dump(mode="json"),
            "tensorrt": section.to_dict(),
            "files": hash_folder(staging),
        }
    )
    write_manifest(staging, updated)
    return updated
