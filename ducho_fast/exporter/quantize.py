"""Lower-precision variants of an fp32 graph: fp16 (overflow-prone ops kept fp32) and int8."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ducho_fast.core.errors import ConfigError

Int8Mode = Literal[
    "auto", "dynamic-per-tensor", "dynamic-per-channel", "dynamic-attention-only", "static", "nncf"
]
# Modes calibrated on the user's items, and the QDQ graphs they leave (both run on ONNX Runtime
# and OpenVINO alike).
CALIBRATED_MODES = ("static", "nncf")
QDQ_GRAPHS = ("static-qdq", "nncf")

# Kept in fp32 inside fp16 graphs: reductions and exponentials overflow or lose the small
# differences that normalisation depends on.
FP16_KEEP_FP32 = (
    "LayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "Softmax",
    "ReduceMean",
    "ReduceSum",
    "ReduceL2",
    "Pow",
    "Sqrt",
    "Exp",
    "Erf",
)
DYNAMIC_OPS = ("MatMul", "Gemm")
# Feed-forward projections of transformer blocks (BERT, CLIP, ViT naming in torch's export).
# Their inputs (GELU outputs) have the widest ranges; keeping them fp32 is the fallback when
# quantizing every MatMul fails the gate (all-MiniLM-L6-v2: 0.977 -> 0.9955, 1.24x fp32).
FEED_FORWARD = re.compile(
    r"intermediate/|/mlp/|/fc[12]/|feed_forward|ffn|(?<!attention)/output/dense/"
)


FP32_CONV_OPS = ("Conv", "ConvTranspose")
COMPUTE_OPS = (*FP32_CONV_OPS, "MatMul", "Gemm")
# A variant whose fp32 convolutions still do more than this share of the multiply-adds is not
# int8 in effect: ONNX Runtime's dynamic int8 quantizes MatMul/Gemm only, so on a CNN it runs
# the fp32 graph under an int8 label (ResNet-50, EfficientNet: over 99% of the multiply-adds
# are convolutions; a ViT's patch embedding: about 3%).
MAX_FP32_CONV_SHARE = 0.9


@dataclass(frozen=True)
class Int8Candidate:
    mode: str
    path: Path


def fp32_conv_share(variant: Path, fp32: Path) -> float:
    """Share of the fp32 graph's weight multiply-adds that `variant` still does in fp32
    convolutions (0 when every Conv is quantized, about 1 for a CNN's dynamic int8)."""
    import onnx
    from onnx import TensorProto

    macs = weight_macs(fp32)
    graph = onnx.load(str(variant), load_external_data=False).graph
    floats = {i.name for i in graph.initializer if i.data_type == TensorProto.FLOAT}
    still_fp32 = {
        node.input[1]
        for node in graph.node
        if node.op_type in FP32_CONV_OPS and node.input[1] in floats
    }
    return sum(macs.get(name, 0) for name in still_fp32) / max(1, sum(macs.values()))


def weight_macs(path: Path) -> dict[str, int]:
    """Multiply-adds per item of each weight of a graph's Conv/MatMul/Gemm nodes: the weight's
    size times the positions it is applied at (unknown dimensions, like a text's length,
    count once)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path), load_external_data=False))
    graph = model.graph
    sizes = {i.name: int(np.prod(i.dims)) for i in graph.initializer}
    shapes = {
        info.name: [d.dim_value or 1 for d in info.type.tensor_type.shape.dim]
        for info in (*graph.value_info, *graph.output)
    }
    macs: dict[str, int] = {}
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        out = shapes.get(node.output[0], [])
        positions = int(np.prod(out[2:] if node.op_type in FP32_CONV_OPS else out[1:-1]))
        for name in node.input[:2]:
            if name in sizes:
                macs[name] = macs.get(name, 0) + sizes[name] * max(1, positions)
    return macs


def to_fp16(source: Path, target: Path) -> Path:
    """fp16 weights and compute with fp32 inputs/outputs and fp32 islands (FP16_KEEP_FP32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(FP16_KEEP_FP32)
    )
    onnx.save(converted, str(target))
    return target


def quantize_dynamic(
    source: Path, target: Path, per_channel: bool, exclude: Sequence[str] = ()
) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(DYNAMIC_OPS),
        nodes_to_exclude=list(exclude),
    )
    return target


def feed_forward_nodes(source: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(source), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type in DYNAMIC_OPS and FEED_FORWARD.search(n.name)]


def attention_only(source: Path, folder: Path) -> Int8Candidate | None:
    """Dynamic per-channel int8 with the feed-forward projections kept in fp32, or None when
    the graph has no recognisable feed-forward nodes (it would equal the full variant)."""
    exclude = feed_forward_nodes(source)
    if not exclude:
        return None
    path = quantize_dynamic(
        source, folder / f"{source.stem}.int8-attn.onnx", per_channel=True, exclude=exclude
    )
    return Int8Candidate("dynamic-attention-only", path)


class ArrayReader:
    """Feeds calibration batches to ORT's static quantizer."""

    def __init__(self, batches: Sequence[Mapping[str, np.ndarray]]):
        self._batches = list(batches)
        self._iter: Iterator[Mapping[str, np.ndarray]] = iter(self._batches)

    def get_next(self) -> Mapping[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self._batches)


def quantize_static(
    source: Path,
    target: Path,
    calibration: Sequence[Mapping[str, np.ndarray]],
    for_tensorrt: bool = False,
) -> Path:
    """QDQ int8 calibrated on user data: signed per-channel weights, and activations in the
    form the target runs fast. ONNX Runtime on x86: unsigned asymmetric (u8 x s8 is the
    VNNI instruction; measured here 2.3x s8 x s8 on the CLIP image tower). TensorRT: signed
    symmetric, the only int8 it accepts, with float biases."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    if not calibration:
        raise ConfigError(
            "static int8 needs a calibration sample: give --sample-images or --sample-texts"
        )
    ort_quantize_static(
        str(source),
        str(target),
        ArrayReader(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={
            "ActivationSymmetric": for_tensorrt,
            "WeightSymmetric": True,
            "QuantizeBias": not for_tensorrt,  # TensorRT keeps biases in float (int32 DQ fails)
        },
    )
    return target


def quantize_nncf(
    source: Path, target: Path, calibration: Sequence[Mapping[str, np.ndarray]]
) -> Path:
    """NNCF post-training quantization (OpenVINO's own tool) of the ONNX graph, calibrated on
    the user's items: QDQ where OpenVINO's CPU plugin fuses int8 kernels, and for
    transformers (graphs with Softmax) SmoothQuant and its attention-aware placement.
    Measured on all-MiniLM-L6-v2 (AMD EPYC): ORT's static QDQ collapses (min cosine -0.04),
    NNCF keeps 0.9925 and runs 2.8x OpenVINO fp32; on ResNet-50 the two are alike."""
    import onnx

    try:
        import nncf
    except ImportError:
        raise ConfigError("--int8-mode nncf needs NNCF: pip install 'ducho-fast[cpu]'") from None
    if not calibration:
        raise ConfigError(
            "nncf int8 needs a calibration sample: give --sample-images/--sample-texts"
        )
    model = onnx.load(str(source))
    transformer = any(node.op_type == "Softmax" for node in model.graph.node)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(list(calibration)),
        model_type=nncf.ModelType.TRANSFORMER if transformer else None,
        subset_size=len(calibration),
    )
    onnx.save(quantized, str(target))
    return target


def int8_candidates(
    source: Path,
    folder: Path,
    mode: Int8Mode,
    calibration: Sequence[Mapping[str, np.ndarray]],
    for_tensorrt: bool = False,
) -> list[Int8Candidate]:
    """The int8 variants to try for `mode`; `auto` tries both dynamic granularities (and
    static when a calibration sample is given). For TensorRT only static QDQ can run."""
    stem = source.stem
    out = []
    if for_tensorrt:
        if mode not in ("auto", "static"):
            raise ConfigError(f"TensorRT runs only static int8 (ORT's QDQ), not {mode}")
        mode = "static"
    if mode in ("auto", "dynamic-per-tensor"):
        path = quantize_dynamic(source, folder / f"{stem}.int8-pt.onnx", per_channel=False)
        out.append(Int8Candidate("dynamic-per-tensor", path))
    if mode in ("auto", "dynamic-per-channel"):
        path = quantize_dynamic(source, folder / f"{stem}.int8-pc.onnx", per_channel=True)
        out.append(Int8Candidate("dynamic-per-channel", path))
    if mode == "dynamic-attention-only":
        candidate = attention_only(source, folder)
        out += [candidate] if candidate is not None else []
    if mode == "static" or (mode == "auto" and calibration):
        target = folder / f"{stem}.int8-qdq.onnx"
        path = quantize_static(source, target, calibration, for_tensorrt)
        out.append(Int8Candidate("static-qdq", path))
    if mode == "nncf":
        path = quantize_nncf(source, folder / f"{stem}.int8-nncf.onnx", calibration)
        out.append(Int8Candidate("nncf", path))
    return out


def time_session(session, inputs: Mapping[str, np.ndarray], repeats: int = 5) -> float:
    """Median seconds per run after one warm-up; used to pick between passing variants."""
    session.run(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(inputs)
        times.append(time.perf_counter() - start)
    return float(np.median(times))
