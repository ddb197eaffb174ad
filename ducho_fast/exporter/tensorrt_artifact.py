"""TensorRT engines inside an artifact: built at export, recorded and hashed in the manifest.

The manifest's `tensorrt` section says which GPU and TensorRT version built the engines, so a
runtime on another machine can tell they are not for it (and build its own) instead of
failing inside TensorRT's deserializer.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ducho_fast.artifact.manifest import Manifest, hash_folder, seal, write_manifest
from ducho_fast.runtime.tensorrt_build import (
    EngineRecord,
    ProfileSpec,
    Serializer,
    TensorRTSection,
    build_engine,
    check_int8_graph,
    default_cache_dir,
    gpu_info,
    resolve_profile,
    tensorrt_version,
)


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
    updated = seal(
        Manifest.model_validate(
            {
                **manifest.model_dump(mode="json"),
                "tensorrt": section.to_dict(),
                "files": hash_folder(staging),
            }
        )
    )
    write_manifest(staging, updated)
    return updated
