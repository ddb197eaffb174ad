"""TensorRT session: an artifact's engine behind the same numpy-in, numpy-out surface.

Device buffers are torch CUDA tensors (torch is already a dependency, so no pycuda/cuda-python).
Inputs are checked against the engine's optimisation profile before anything reaches the GPU;
batches larger than the profile's maximum are run in slices.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ducho_fast.artifact.manifest import Manifest
from ducho_fast.core.errors import (
    ArtifactError,
    InputError,
    RuntimeUnavailableError,
)
from ducho_fast.runtime.tensorrt_build import (
    GpuInfo,
    ProfileSpec,
    Serializer,
    ShapeRange,
    TensorRTSection,
    build_engine,
    default_cache_dir,
    gpu_info,
    import_tensorrt,
    resolve_profile,
    tensorrt_version,
)

log = logging.getLogger(__name__)

# TensorRT DataType member name -> numpy dtype (BF16, FP8, INT4 have no numpy equivalent).
TRT_TO_NUMPY = {
    "FLOAT": np.dtype(np.float32),
    "HALF": np.dtype(np.float16),
    "INT8": np.dtype(np.int8),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
}


def numpy_dtype(trt_dtype_name: str) -> np.dtype:
    if trt_dtype_name not in TRT_TO_NUMPY:
        raise RuntimeUnavailableError(
            f"engine tensor type {trt_dtype_name} has no numpy equivalent; this session "
            f"handles {sorted(TRT_TO_NUMPY)}"
        )
    return TRT_TO_NUMPY[trt_dtype_name]


def coerce_dtype(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Same-kind casts only (int64 ids -> int32, float64 -> float32); anything else is a bug
    upstream and is refused rather than silently reinterpreted."""
    if array.dtype == dtype:
        return array
    integers = "iu"
    if array.dtype.kind in integers and dtype.kind in integers:
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InputError(f"input {name!r}: values do not fit the engine's {dtype} type")
        return array.astype(dtype)
    if array.dtype.kind == "f" and dtype.kind == "f":
        return array.astype(dtype)
    raise InputError(f"input {name!r} is {array.dtype}, but the TensorRT engine takes {dtype}")


def check_input_shape(name: str, shape: Sequence[int], allowed: ShapeRange) -> None:
    """Every axis within the engine's profile, except a batch above its maximum (run sliced)."""
    rest = ShapeRange(allowed.min[1:], allowed.opt[1:], allowed.max[1:])
    fits = len(shape) == len(allowed.min) and shape[0] >= allowed.min[0] and rest.accepts(shape[1:])
    if not fits:
        raise InputError(
            f"input {name!r} has shape {tuple(shape)}, but this TensorRT engine accepts "
            f"{allowed.describe()} (batch above {allowed.max[0]} is split); re-export with a "
            "profile that covers it, or pad/truncate the input"
        )


def batch_slices(size: int, max_batch: int) -> list[slice]:
    return [slice(start, min(start + max_batch, size)) for start in range(0, size, max_batch)]


def locate_engine(
    folder: Path,
    manifest: Manifest,
    kind: str,
    version: str,
    gpu: GpuInfo,
    cache_dir: Path,
    serialize: Serializer | None = None,
) -> Path:
    """The artifact's engine when it was built here (same TensorRT, same GPU architecture);
    otherwise one built from the artifact's ONNX graph into the user cache, once."""
    graph = manifest.graph(kind)
    section = TensorRTSection.from_manifest(manifest)
    record = section.engine_for(kind, version, gpu) if section else None
    if record is not None:
        return Path(folder) / record.file
    if section is not None:
        log.warning(
            "%s: engines were built with TensorRT %s for %s (sm %s); this is TensorRT %s on %s: "
            "building a %s engine for this GPU",
            folder,
            section.version,
            section.gpu.name,
            section.gpu.compute_capability,
            version,
            gpu.name,
            kind,
        )
    spec = resolve_profile(ProfileSpec(), graph)
    built = build_engine(
        Path(folder) / graph.file,
        spec,
        graph.precision,
        cache_dir,
        gpu=gpu,
        trt_version=version,
        serialize=serialize,
    )
    return built.path


class TensorRTSession:
    """Runs one serialized engine on the current CUDA device; one execution at a time."""

    def __init__(self, engine_path: Path | str):
        import torch

        trt = import_tensorrt()
        gpu_info()  # a clear error when there is no CUDA device, before TensorRT's own
        self._torch = torch
        self._device = torch.device("cuda", torch.cuda.current_device())
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self._engine is None:
            raise ArtifactError(
                f"TensorRT could not load {engine_path} (built by another TensorRT version or "
                "for another GPU?); export again with tensorrt on this machine"
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = tuple(n for n in names if is_input[n])
        self.output_names = tuple(n for n in names if not is_input[n])
        self._dtypes = {n: numpy_dtype(self._engine.get_tensor_dtype(n).name) for n in names}
        self._ranges = {n: self._profile_range(n) for n in self.input_names}
        self._stream = torch.cuda.Stream(self._device)
        self._lock = threading.Lock()

    @classmethod
    def from_artifact(
        cls, folder: Path, manifest: Manifest, kind: str, cache_dir: Path | None = None
    ) -> TensorRTSession:
        """The session for graph `kind` of an artifact (see `locate_engine`); engines built on
        demand go to `cache_dir` (default: $DUCHO_FAST_CACHE/tensorrt)."""
        version = tensorrt_version()
        gpu = gpu_info()
        cache = cache_dir if cache_dir is not None else default_cache_dir()
        return cls(locate_engine(Path(folder), manifest, kind, version, gpu, cache))

    def _profile_range(self, name: str) -> ShapeRange:
        low, opt, high = self._engine.get_tensor_profile_shape(name, 0)
        return ShapeRange(tuple(low), tuple(opt), tuple(high))

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = self._prepare(inputs)
        size = next(iter(feed.values())).shape[0]
        max_batch = min(self._ranges[name].max[0] for name in self.input_names)
        if size <= max_batch:
            return self._execute(feed)
        parts = [
            self._execute({name: value[part] for name, value in feed.items()})
            for part in batch_slices(size, max_batch)
        ]
        return {name: np.concatenate([p[name] for p in parts]) for name in self.output_names}

    def _prepare(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise InputError(f"TensorRT engine inputs {missing} were not given")
        feed = {}
        for name in self.input_names:
            array = np.asarray(inputs[name])
            check_input_shape(name, array.shape, self._ranges[name])
            feed[name] = np.ascontiguousarray(coerce_dtype(name, array, self._dtypes[name]))
        if len({value.shape[0] for value in feed.values()}) > 1:
            raise InputError("TensorRT engine inputs disagree on the batch size")
        return feed

    def _execute(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        with self._lock, torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            buffers: list[Any] = []
            for name, array in feed.items():
                host = array if array.flags.writeable else array.copy()
                tensor = torch.from_numpy(host).to(self._device)
                if not self._context.set_input_shape(name, tuple(array.shape)):
                    raise InputError(f"TensorRT refused shape {array.shape} for {name!r}")
                self._context.set_tensor_address(name, tensor.data_ptr())
                buffers.append(tensor)
            outputs = {name: self._output_buffer(name) for name in self.output_names}
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeUnavailableError("TensorRT execution failed; see the TensorRT log")
            self._stream.synchronize()
            return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}

    def _output_buffer(self, name: str) -> Any:
        torch = self._torch
        shape = tuple(self._context.get_tensor_shape(name))
        dtype = torch.from_numpy(np.empty(0, dtype=self._dtypes[name])).dtype
        tensor = torch.empty(shape, dtype=dtype, device=self._device)
        self._context.set_tensor_address(name, tensor.data_ptr())
        return tensor
