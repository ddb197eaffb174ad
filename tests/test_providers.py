"""ONNX Runtime execution providers: no silent fallback, IO binding equal to plain runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import ducho_fast
from ducho_fast.core.errors import ConfigError, RuntimeUnavailableError
from ducho_fast.exporter.api import ExportConfig
from ducho_fast.modalities.image import synthetic_images
from ducho_fast.models.spec import ModelRef
from ducho_fast.runtime.onnxruntime import OrtOptions, OrtSession, ort_options
from ducho_fast.runtime.table import RuntimeChoice

needs_cuda = pytest.mark.skipif(
    "CUDAExecutionProvider" not in onnxruntime.get_available_providers(),
    reason="needs onnxruntime-gpu with a visible CUDA GPU",
)


@pytest.fixture(scope="module")
def image_graph(tiny_clip, tmp_path_factory) -> Path:
    folder = ducho_fast.export(
        ExportConfig(ModelRef(str(tiny_clip), task="image"), tmp_path_factory.mktemp("a") / "a")
    )
    return folder / "image.onnx"


def pixels_for(graph: Path) -> dict[str, np.ndarray]:
    _, height, width, _ = onnxruntime.InferenceSession(str(graph)).get_inputs()[0].shape
    return {"pixels": synthetic_images(5, (height, width), seed=2)}


def test_io_binding_gives_the_plain_run_outputs(image_graph):
    pixels = pixels_for(image_graph)
    plain = OrtSession(image_graph).run(pixels)
    bound = OrtSession(image_graph, OrtOptions(io_binding=True)).run(pixels)
    assert plain.keys() == bound.keys()
    for name in plain:
        np.testing.assert_array_equal(plain[name], bound[name])


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    reason="this machine has the CUDA provider",
)
def test_a_missing_gpu_provider_is_an_error_not_a_fallback(image_graph):
    for provider in ("cuda", "tensorrt"):
        options = ort_options(RuntimeChoice(ort_provider=provider), "fp32")
        with pytest.raises(RuntimeUnavailableError, match="not available"):
            OrtSession(image_graph, options)


def test_provider_chains_keep_the_cpu_last_and_cache_trt_engines(tmp_path):
    trt = ort_options(RuntimeChoice(ort_provider="tensorrt", cache_dir=tmp_path), "fp16")
    assert trt.providers == ("tensorrt", "cuda", "cpu")
    assert trt.provider_options[0]["trt_fp16_enable"] == "True"
    assert trt.provider_options[0]["trt_engine_cache_path"] == str(tmp_path / "ort-tensorrt")
    assert ort_options(RuntimeChoice(), "fp32").providers == ("cpu",)
    with pytest.raises(ConfigError, match="ort_provider"):
        ort_options(RuntimeChoice(ort_provider="rocm"), "fp32")


@pytest.mark.gpu
@needs_cuda
def test_cuda_provider_matches_cpu(image_graph):
    pixels = pixels_for(image_graph)
    cpu = OrtSession(image_graph).run(pixels)
    gpu = OrtSession(image_graph, ort_options(RuntimeChoice(ort_provider="cuda"), "fp32"))
    assert gpu.io_binding
    for name, value in gpu.run(pixels).items():
        np.testing.assert_allclose(value, cpu[name], rtol=1e-3, atol=1e-4)


def test_threads_setting_reaches_the_onnxruntime_session(image_graph):
    options = ort_options(RuntimeChoice(threads=1), "fp32")
    assert options.intra_op_threads == 1
    session = OrtSession(image_graph, options)
    assert session._session.get_session_options().intra_op_num_threads == 1
