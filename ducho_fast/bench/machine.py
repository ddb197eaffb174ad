"""What the figures were measured on: CPU, libraries, load, and the fp32 matmul ceiling."""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata
from typing import Any

LIBRARIES = ("torch", "onnxruntime", "onnxruntime-gpu", "transformers", "numpy", "pillow")


def cpu_model() -> tuple[str, set[str]]:
    name, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and ":" in line:
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return name, flags


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine_info() -> dict[str, Any]:
    name, flags = cpu_model()
    return {
        "node": platform.node(),
        "cpu": name,
        "logical_cpus": os.cpu_count(),
        "cpu_features": sorted(
            flags & {"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"}
        ),
        "python": platform.python_version(),
        "libraries": library_versions(),
        "load_average_at_start": list(os.getloadavg()),
    }


def best_rate(run, flops: float, repeats: int) -> float:
    run()  # warm-up
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


def matmul_gflops(size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """This machine's fp32 matrix-multiply ceiling, as torch and as ONNX Runtime reach it
    (their GEMM kernels differ); the best rate of the repetitions, since a ceiling is wanted."""
    import onnxruntime
    import torch
    from onnx import TensorProto, helper

    a, b = torch.randn(size, size), torch.randn(size, size)
    flops = 2 * size**3
    rates = {"torch": best_rate(lambda: torch.mm(a, b), flops, repeats)}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = onnxruntime.InferenceSession(
        model.SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    feeds = {"a": a.numpy(), "b": b.numpy()}
    rates["onnxruntime"] = best_rate(lambda: session.run(None, feeds), flops, repeats)
    rates["best"] = max(rates.values())
    return rates


def flops_per_item(module: Any, inputs: dict[str, Any], input_names: tuple[str, ...]) -> float:
    """Floating-point operations per item of one eager forward (torch's own counter)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    tensors = [torch.from_numpy(inputs[name]) for name in input_names]
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        module(*tensors)
    return counter.get_total_flops() / len(tensors[0])
