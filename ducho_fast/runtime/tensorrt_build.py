"""ONNX -> TensorRT engines: optimisation profiles, a per-GPU engine cache, the builder call.

Everything except `serialize_engine` is plain Python (no GPU, no TensorRT), so profiles, cache
keys, the cache's atomic write and the int8 rules are unit-tested on any machine. An engine is
only valid for one GPU architecture and one TensorRT version, so both are part of its key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ducho_fast.artifact.manifest import GraphInfo, Manifest, TensorInfo, graph_io
from ducho_fast.core.cache import resolve_cache_dir
from ducho_fast.core.errors import ArtifactError, ConfigError, RuntimeUnavailableError
from ducho_fast.core.io import sha256_file

TRT_PRECISIONS = ("fp32", "fp16", "int8")
# Bump when the way engines are built changes (flags, graph rewrites): old cache entries then
# stop matching instead of being reused.
ENGINE_RECIPE = 1
DEFAULT_WORKSPACE = 4 << 30
SEQUENCE_AXIS_NAMES = ("sequence", "seq", "seq_len", "sequence_length")
TEXT_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
INSTALL_HINT = (
    "install it with `pip install ducho-fast[gpu]` (or `pip install tensorrt`; the wheels "
    "download TensorRT from NVIDIA's index at install time, so that host must be reachable)"
)

Shape = tuple[int, ...]
Serializer = Callable[[Path, Mapping[str, "ShapeRange"], str], bytes]


@dataclass(frozen=True)
class ProfileSpec:
    """Batch and sequence ranges one engine accepts; TensorRT tunes its kernels for `opt`.

    `opt_seq` / `max_seq` left as None are filled from the graph's tokenizer rule by
    `resolve_profile`, because only the artifact knows its text length.
    """

    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 64
    min_seq: int = 1
    opt_seq: int | None = None
    max_seq: int | None = None

    def __post_init__(self) -> None:
        check_range("batch", self.min_batch, self.opt_batch, self.max_batch)
        if self.opt_seq is not None and self.max_seq is not None:
            check_range("sequence", self.min_seq, self.opt_seq, self.max_seq)
        elif self.min_seq < 1:
            raise ConfigError(f"TensorRT profile: min sequence must be >= 1, got {self.min_seq}")

    def to_dict(self) -> dict[str, int | None]:
        return asdict(self)


def check_range(what: str, low: int, opt: int, high: int) -> None:
    if not 1 <= low <= opt <= high:
        raise ConfigError(
            f"TensorRT profile: {what} needs 1 <= min <= opt <= max, got {low}, {opt}, {high}"
        )


@dataclass(frozen=True)
class ShapeRange:
    """The (min, opt, max) shapes of one input, as `IOptimizationProfile.set_shape` takes."""

    min: Shape
    opt: Shape
    max: Shape

    def accepts(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(
            low <= size <= high for low, size, high in zip(self.min, shape, self.max, strict=True)
        )

    def describe(self) -> str:
        pairs = zip(self.min, self.max, strict=True)
        dims = [str(lo) if lo == hi else f"{lo}..{hi}" for lo, hi in pairs]
        return f"({', '.join(dims)})"

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Sequence[int]]) -> ShapeRange:
        return cls(tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))


def resolve_profile(spec: ProfileSpec, graph: GraphInfo) -> ProfileSpec:
    """Fill the sequence range from the graph's tokenizer rule (graphs with a max length).

    A graph that always pads to max_length is tuned for exactly that length; one that pads to
    the longest text in a batch is tuned for half of it, a typical batch after length sorting.
    """
    rule = graph.preprocess or {}
    if "max_length" not in rule:
        return spec
    max_length = int(rule["max_length"])
    max_seq = spec.max_seq if spec.max_seq is not None else max_length
    if spec.opt_seq is not None:
        opt_seq = spec.opt_seq
    elif rule.get("padding") == "max_length":
        opt_seq = max_seq
    else:
        opt_seq = max(spec.min_seq, max_seq // 2)
    return replace(spec, opt_seq=min(opt_seq, max_seq), max_seq=max_seq)


def is_dynamic(dim: int | str | None) -> bool:
    """Dynamic axes come as a name (`"batch"`), None, or 0/-1 for an unnamed ONNX dimension."""
    return dim is None or isinstance(dim, str) or dim <= 0


def axis_range(
    tensor: TensorInfo, axis: int, dim: int | str | None, spec: ProfileSpec
) -> tuple[int, int, int]:
    if not is_dynamic(dim):
        return (int(dim), int(dim), int(dim))  # type: ignore[arg-type]
    if axis == 0:
        return (spec.min_batch, spec.opt_batch, spec.max_batch)
    named_sequence = isinstance(dim, str) and dim.lower() in SEQUENCE_AXIS_NAMES
    if axis == 1 and (named_sequence or tensor.name in TEXT_INPUT_NAMES):
        if spec.opt_seq is None or spec.max_seq is None:
            raise ConfigError(
                f"TensorRT profile: input {tensor.name!r} has a dynamic sequence axis but the "
                "profile has no sequence range (set opt_seq/max_seq, or resolve_profile)"
            )
        return (spec.min_seq, spec.opt_seq, spec.max_seq)
    raise ConfigError(
        f"TensorRT profile: input {tensor.name!r} axis {axis} ({dim!r}) is dynamic but is "
        "neither the batch axis (0) nor a text sequence axis (1); no range is known for it"
    )


def profile_shapes(inputs: Sequence[TensorInfo], spec: ProfileSpec) -> dict[str, ShapeRange]:
    """Per-input (min, opt, max) shapes: batch on axis 0, sequence on axis 1 of text inputs."""
    shapes = {}
    for tensor in inputs:
        ranges = [axis_range(tensor, axis, dim, spec) for axis, dim in enumerate(tensor.shape)]
        shapes[tensor.name] = ShapeRange(
            tuple(r[0] for r in ranges), tuple(r[1] for r in ranges), tuple(r[2] for r in ranges)
        )
    return shapes


@dataclass(frozen=True)
class GpuInfo:
    """What an engine is tied to: the device model and its compute capability."""

    name: str
    compute_capability: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "compute_capability": list(self.compute_capability)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GpuInfo:
        major, minor = data["compute_capability"]
        return cls(str(data["name"]), (int(major), int(minor)))


def gpu_info(device: int | None = None) -> GpuInfo:
    """The current CUDA device, or a clear error: TensorRT never runs on the CPU."""
    import torch

    if not torch.cuda.is_available():
        raise RuntimeUnavailableError(
            "TensorRT needs an NVIDIA GPU, but torch sees no CUDA device here (no GPU, no "
            "driver, or a CPU-only torch build); use the onnxruntime runtime instead"
        )
    index = torch.cuda.current_device() if device is None else device
    major, minor = torch.cuda.get_device_capability(index)
    return GpuInfo(torch.cuda.get_device_name(index), (int(major), int(minor)))


def import_tensorrt() -> Any:
    """The `tensorrt` module, or an error that says how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"TensorRT is not installed ({exc}); {INSTALL_HINT}. It needs an NVIDIA GPU."
        ) from exc
    return tensorrt


def tensorrt_version() -> str:
    return str(import_tensorrt().__version__)


def engine_cache_key(
    onnx_sha256: str, gpu: GpuInfo, trt_version: str, precision: str, profile: ProfileSpec
) -> str:
    """Stable hex key: same graph, GPU, TensorRT, precision and profile -> same engine."""
    payload = {
        "recipe": ENGINE_RECIPE,
        "onnx_sha256": onnx_sha256,
        "gpu": gpu.to_dict(),
        "tensorrt": trt_version,
        "precision": precision,
        "profile": profile.to_dict(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cached_engine(cache_dir: Path, key: str, build: Callable[[], bytes]) -> Path:
    """The engine file for `key`, built once; written to a temp file then renamed into place,
    so a crash or a concurrent builder never leaves a truncated engine under the real name."""
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{key}.engine"
    if target.is_file() and target.stat().st_size > 0:
        return target
    data = build()
    if not data:
        raise RuntimeUnavailableError("the TensorRT builder returned an empty engine")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target


def default_cache_dir() -> Path:
    """Engines built on demand live beside the exported-artifact cache."""
    return resolve_cache_dir() / "tensorrt"


# Ops from ONNX Runtime's dynamic or QOperator int8 formats: TensorRT has no kernels for them.
NON_QDQ_INT8_OPS = (
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "ConvInteger",
    "QLinearMatMul",
    "QLinearConv",
    "QLinearAdd",
    "QLinearMul",
)


def int8_problems(model: Any) -> list[str]:
    """Why TensorRT cannot run this int8 ONNX model; empty when it can.

    TensorRT int8 here means explicit quantization: the graph carries QuantizeLinear /
    DequantizeLinear pairs with their scales (no TensorRT calibration), signed int8 and zero
    points of 0 (TensorRT quantization is symmetric only).
    """
    from onnx import TensorProto, numpy_helper

    nodes = list(model.graph.node)
    ops = {node.op_type for node in nodes}
    problems = [
        f"{op} (dynamic/QOperator int8) has no TensorRT kernel"
        for op in sorted(ops)
        if op in NON_QDQ_INT8_OPS
    ]
    qdq = [node for node in nodes if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        problems.append(
            "no QuantizeLinear/DequantizeLinear nodes: not an explicitly quantized graph"
        )
    initializers = {init.name: init for init in model.graph.initializer}
    for node in qdq:
        if len(node.input) < 3 or not node.input[2]:
            continue
        zero_point = initializers.get(node.input[2])
        if zero_point is None:
            continue
        if zero_point.data_type != TensorProto.INT8:
            problems.append(f"{node.name or node.op_type}: zero point is not signed int8")
        elif numpy_helper.to_array(zero_point).any():
            problems.append(f"{node.name or node.op_type}: non-zero zero point (asymmetric)")
    return problems


def check_int8_graph(onnx_path: Path) -> None:
    import onnx

    problems = int8_problems(onnx.load(str(onnx_path), load_external_data=False))
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise ConfigError(
            f"{onnx_path.name} cannot become a TensorRT int8 engine: TensorRT int8 needs an "
            f"explicitly quantized graph (symmetric signed-int8 Q/DQ nodes). Found: {shown}. "
            "Export fp16 (or fp32) for TensorRT instead."
        )


def cast_uint8_inputs(model: Any) -> Any:
    """Insert a Cast to float32 right after every uint8 graph input.

    TensorRT accepts uint8 only at the network boundary, converted straight to float; our image
    graphs transpose the uint8 pixels before their own cast. Pixel values 0..255 are exact in
    float32 and the layout ops between are type-agnostic, so the outputs do not change.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    casts = []
    for value in graph.input:
        if value.type.tensor_type.elem_type != TensorProto.UINT8:
            continue
        name = value.name
        casted = f"{name}__as_float32"
        for node in graph.node:
            for i, used in enumerate(node.input):
                if used == name:
                    node.input[i] = casted
        casts.append(
            helper.make_node("Cast", [name], [casted], name=f"{name}__cast", to=TensorProto.FLOAT)
        )
    for offset, node in enumerate(casts):
        graph.node.insert(offset, node)
    return model


def serialize_engine(onnx_path: Path, shapes: Mapping[str, ShapeRange], precision: str) -> bytes:
    """Parse the ONNX graph and build a serialized engine with the TensorRT 10 builder API."""
    import onnx

    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    model = cast_uint8_inputs(onnx.load(str(onnx_path), load_external_data=False))
    if not parser.parse(model.SerializeToString(), str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeUnavailableError(
            f"TensorRT could not parse {onnx_path.name}:\n  " + "\n  ".join(errors)
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, DEFAULT_WORKSPACE)
    config.add_optimization_profile(optimization_profile(builder, network, shapes))
    set_precision_flags(trt, config, precision)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeUnavailableError(
            f"TensorRT failed to build an engine for {onnx_path.name} ({precision}); "
            "see the TensorRT log above"
        )
    return bytes(memoryview(serialized))


def optimization_profile(builder: Any, network: Any, shapes: Mapping[str, ShapeRange]) -> Any:
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        name = network.get_input(index).name
        if name not in shapes:
            raise ConfigError(f"TensorRT profile: no shape range for network input {name!r}")
        shape = shapes[name]
        profile.set_shape(name, shape.min, shape.opt, shape.max)
    return profile


def set_precision_flags(trt: Any, config: Any, precision: str) -> None:
    """fp32 also turns TF32 off (on by default on Ampere+) so fp32 means fp32; int8 relies on
    the graph's own Q/DQ scales (explicit quantization), so no calibrator is set."""
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    elif precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)


@dataclass(frozen=True)
class BuiltEngine:
    """A cached engine file and everything that decided its key."""

    path: Path
    key: str
    precision: str
    profile: ProfileSpec
    shapes: dict[str, ShapeRange]
    gpu: GpuInfo
    trt_version: str


def build_engine(
    onnx_path: Path,
    profile: ProfileSpec,
    precision: str,
    cache_dir: Path,
    *,
    gpu: GpuInfo | None = None,
    trt_version: str | None = None,
    serialize: Serializer | None = None,
) -> BuiltEngine:
    """Build (or reuse from `cache_dir`) the engine for one ONNX graph.

    `profile` must be resolved (see `resolve_profile`) for text graphs. `gpu`, `trt_version`
    and `serialize` default to this machine and the real builder; tests inject them.
    """
    onnx_path = Path(onnx_path)
    if precision not in TRT_PRECISIONS:
        raise ConfigError(f"unknown TensorRT precision {precision!r}; use one of {TRT_PRECISIONS}")
    if precision == "int8":
        check_int8_graph(onnx_path)
    trt_version = trt_version if trt_version is not None else tensorrt_version()
    gpu = gpu if gpu is not None else gpu_info()
    shapes = profile_shapes(graph_io(onnx_path)[0], profile)
    key = engine_cache_key(sha256_file(onnx_path), gpu, trt_version, precision, profile)
    build = serialize if serialize is not None else serialize_engine
    path = cached_engine(cache_dir, key, lambda: build(onnx_path, shapes, precision))
    return BuiltEngine(path, key, precision, profile, shapes, gpu, trt_version)


# --- the manifest's tensorrt section ---

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
