"""TensorRT path: profiles, cache keys, the engine cache, int8 rules and clear errors run
everywhere; building and running real engines needs a GPU and TensorRT (marked gpu + trt)."""

from __future__ import annotations

import json
import os
import sys
import types
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import ducho_fast
from ducho_fast import ExportConfig, ModelRef, Sample
from ducho_fast.artifact.manifest import TensorInfo, read_manifest
from ducho_fast.core.errors import ConfigError, InputError, RuntimeUnavailableError
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.exporter import tensorrt_artifact
from ducho_fast.exporter.tensorrt_artifact import add_tensorrt_engines
from ducho_fast.resolve import open_model
from ducho_fast.runtime import tensorrt as trt_runtime
from ducho_fast.runtime import tensorrt_build as trt_export
from ducho_fast.runtime.onnxruntime import OrtSession
from ducho_fast.runtime.table import RuntimeChoice
from ducho_fast.runtime.tensorrt_build import (
    GpuInfo,
    ProfileSpec,
    ShapeRange,
    TensorRTSection,
    build_engine,
    cached_engine,
    cast_uint8_inputs,
    engine_cache_key,
    int8_problems,
    profile_shapes,
    resolve_profile,
)

GPU = GpuInfo("NVIDIA A10", (8, 6))
TRT_VERSION = "10.3.0"


def fake_serialize(calls: list | None = None):
    """Stands in for the TensorRT builder: deterministic bytes, and counts its calls."""

    def serialize(onnx_path: Path, shapes, precision: str) -> bytes:
        if calls is not None:
            calls.append((onnx_path.name, precision))
        return f"engine:{onnx_path.name}:{precision}:{sorted(shapes)}".encode()

    return serialize


@pytest.fixture(scope="module")
def clip_artifact(tiny_clip, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trt") / "clip"
    return ducho_fast.export(ExportConfig(ModelRef(str(tiny_clip)), folder))


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make `import tensorrt` fail, whatever is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# --- profiles -----------------------------------------------------------------------------


def test_profile_shapes_from_a_real_clip_artifact(clip_artifact):
    manifest = read_manifest(clip_artifact)
    spec = ProfileSpec(min_batch=1, opt_batch=8, max_batch=16)
    image = manifest.graph("image")
    shapes = profile_shapes(image.inputs, resolve_profile(spec, image))
    assert shapes == {"pixels": ShapeRange((1, 64, 64, 3), (8, 64, 64, 3), (16, 64, 64, 3))}
    text = manifest.graph("text")
    resolved = resolve_profile(spec, text)
    assert text.preprocess["padding"] == "longest"  # tuned for half the max length
    assert (resolved.opt_seq, resolved.max_seq) == (38, 77)
    shapes = profile_shapes(text.inputs, resolved)
    assert set(shapes) == {"input_ids", "attention_mask"}
    assert shapes["input_ids"] == ShapeRange((1, 1), (8, 38), (16, 77))
    assert shapes["input_ids"].accepts((3, 20)) and not shapes["input_ids"].accepts((3, 78))


def test_profile_sequence_follows_the_padding_rule():
    def graph(padding: str):
        text = {"max_length": 128, "padding": padding, "truncation": True}
        tensors = [TensorInfo(name="input_ids", dtype="int64", shape=["batch", "sequence"])]
        return types.SimpleNamespace(preprocess=text, inputs=tensors)

    longest = resolve_profile(ProfileSpec(), graph("longest"))
    assert (longest.min_seq, longest.opt_seq, longest.max_seq) == (1, 64, 128)
    fixed = resolve_profile(ProfileSpec(max_seq=32), graph("max_length"))
    assert (fixed.opt_seq, fixed.max_seq) == (32, 32)


def test_profile_shapes_read_unnamed_dynamic_axes():
    spec = ProfileSpec(min_batch=2, opt_batch=4, max_batch=8, opt_seq=16, max_seq=32)
    inputs = [
        TensorInfo(name="pixels", dtype="uint8", shape=[0, 224, 224, 3]),  # unnamed ONNX dim
        TensorInfo(name="attention_mask", dtype="int64", shape=["b", 0]),
    ]
    shapes = profile_shapes(inputs, spec)
    assert shapes["pixels"].max == (8, 224, 224, 3)
    assert shapes["attention_mask"] == ShapeRange((2, 1), (4, 16), (8, 32))
    from ducho_fast.runtime.tensorrt_build import axis_range

    none_dim = TensorInfo.model_construct(name="x", dtype="float32", shape=[None, 5])
    assert axis_range(none_dim, 0, None, spec) == (2, 4, 8)


def test_profile_errors_name_the_input_and_axis():
    with pytest.raises(ConfigError, match=r"'pixels' axis 1 \('height'\)"):
        profile_shapes(
            [TensorInfo(name="pixels", dtype="uint8", shape=[1, "height"])], ProfileSpec()
        )
    with pytest.raises(ConfigError, match="no sequence range"):
        profile_shapes([TensorInfo(name="input_ids", dtype="int64", shape=[1, "s"])], ProfileSpec())
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        ProfileSpec(min_batch=8, opt_batch=4)
    with pytest.raises(ConfigError, match="sequence"):
        ProfileSpec(min_seq=4, opt_seq=2, max_seq=8)


# --- cache keys and the engine cache ------------------------------------------------------


def test_engine_cache_key_is_stable_and_sensitive():
    spec = ProfileSpec(opt_seq=77, max_seq=77)
    base = engine_cache_key("ab" * 32, GPU, TRT_VERSION, "fp16", spec)
    assert base == engine_cache_key(
        "ab" * 32, GpuInfo("NVIDIA A10", (8, 6)), "10.3.0", "fp16", spec
    )
    assert len(base) == 64 and int(base, 16) >= 0
    variants = [
        engine_cache_key("cd" * 32, GPU, TRT_VERSION, "fp16", spec),
        engine_cache_key("ab" * 32, GpuInfo("NVIDIA A10", (8, 9)), TRT_VERSION, "fp16", spec),
        engine_cache_key("ab" * 32, GpuInfo("NVIDIA L4", (8, 6)), TRT_VERSION, "fp16", spec),
        engine_cache_key("ab" * 32, GPU, "10.4.0", "fp16", spec),
        engine_cache_key("ab" * 32, GPU, TRT_VERSION, "fp32", spec),
        engine_cache_key("ab" * 32, GPU, TRT_VERSION, "fp16", ProfileSpec(max_batch=128)),
        engine_cache_key("ab" * 32, GPU, TRT_VERSION, "fp16", ProfileSpec(opt_seq=32, max_seq=77)),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_engine_is_built_once_then_served_from_the_cache(clip_artifact, tmp_path):
    calls: list = []
    onnx_path = clip_artifact / "image.onnx"
    spec = ProfileSpec()
    kwargs = {"gpu": GPU, "trt_version": TRT_VERSION, "serialize": fake_serialize(calls)}
    first = build_engine(onnx_path, spec, "fp32", tmp_path, **kwargs)
    second = build_engine(onnx_path, spec, "fp32", tmp_path, **kwargs)
    assert calls == [("image.onnx", "fp32")]
    assert first.path == second.path == tmp_path / f"{first.key}.engine"
    assert first.path.read_bytes().startswith(b"engine:image.onnx:fp32")
    assert first.shapes["pixels"].max == (64, 64, 64, 3)
    other = build_engine(onnx_path, spec, "fp16", tmp_path, **kwargs)
    assert other.key != first.key and len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{first.key}.engine", f"{other.key}.engine"]
    )


def test_a_failed_build_leaves_nothing_in_the_cache(tmp_path):
    def failing() -> bytes:
        raise RuntimeUnavailableError("builder crashed")

    with pytest.raises(RuntimeUnavailableError, match="builder crashed"):
        cached_engine(tmp_path / "cache", "k1", failing)
    with pytest.raises(RuntimeUnavailableError, match="empty engine"):
        cached_engine(tmp_path / "cache", "k2", lambda: b"")
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_an_interrupted_write_never_leaves_a_partial_engine(tmp_path, monkeypatch):
    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cached_engine(tmp_path, "key", lambda: b"x" * 1000)
    assert list(tmp_path.iterdir()) == []  # neither the engine nor its temp file
    monkeypatch.undo()
    path = cached_engine(tmp_path, "key", lambda: b"x" * 1000)
    assert path.read_bytes() == b"x" * 1000 and list(tmp_path.iterdir()) == [path]


def test_an_empty_cache_file_is_rebuilt(tmp_path):
    (tmp_path / "key.engine").write_bytes(b"")
    assert cached_engine(tmp_path, "key", lambda: b"engine").read_bytes() == b"engine"


# --- clear errors without TensorRT or a GPU -----------------------------------------------


def test_missing_tensorrt_says_how_to_install(no_tensorrt):
    with pytest.raises(RuntimeUnavailableError, match=r"pip install ducho-fast\[gpu\]"):
        trt_export.import_tensorrt()


def test_no_cuda_device_is_a_clear_error(no_cuda):
    with pytest.raises(RuntimeUnavailableError, match="TensorRT needs an NVIDIA GPU"):
        trt_export.gpu_info()


def test_export_with_tensorrt_but_without_it_leaves_no_artifact(tiny_clip, tmp_path, no_tensorrt):
    config = ExportConfig(ModelRef(str(tiny_clip), task="image"), tmp_path / "a", tensorrt=True)
    with pytest.raises(RuntimeUnavailableError, match="TensorRT is not installed"):
        ducho_fast.export(config)
    assert list(tmp_path.iterdir()) == []  # no artifact, no staging folder


def test_export_with_tensorrt_but_no_gpu_leaves_no_artifact(
    tiny_clip, tmp_path, monkeypatch, no_cuda
):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    config = ExportConfig(ModelRef(str(tiny_clip), task="image"), tmp_path / "a", tensorrt=True)
    with pytest.raises(RuntimeUnavailableError, match="no CUDA device"):
        ducho_fast.export(config)
    assert list(tmp_path.iterdir()) == []


def test_open_model_on_the_tensorrt_runtime_without_it(clip_artifact, no_tensorrt):
    choice = RuntimeChoice(runtime="tensorrt")
    with pytest.raises(RuntimeUnavailableError, match="TensorRT is not installed"):
        open_model(ModelRef(str(clip_artifact)), "image", choice)


def test_open_model_on_the_tensorrt_runtime_without_gpu(clip_artifact, monkeypatch, no_cuda):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0"))
    choice = RuntimeChoice(runtime="tensorrt")
    with pytest.raises(RuntimeUnavailableError, match="needs an NVIDIA GPU"):
        open_model(ModelRef(str(clip_artifact)), "text", choice)


# --- int8: explicit quantization only -----------------------------------------------------


def qdq_model(zero_point: int, zp_type: int = TensorProto.INT8) -> onnx.ModelProto:
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "scale")
    zp_dtype = np.int8 if zp_type == TensorProto.INT8 else np.uint8
    zp = numpy_helper.from_array(np.array(zero_point, dtype=zp_dtype), "zp")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], name="dq"),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [scale, zp],
    )
    return helper.make_model(graph)


def test_int8_needs_symmetric_signed_qdq():
    assert int8_problems(qdq_model(0)) == []
    assert "non-zero zero point" in int8_problems(qdq_model(3))[0]
    assert "not signed int8" in int8_problems(qdq_model(0, TensorProto.UINT8))[0]
    dynamic = helper.make_model(
        helper.make_graph(
            [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])],
            "dyn",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("q", TensorProto.UINT8, [1, 4])],
        )
    )
    problems = int8_problems(dynamic)
    assert any("DynamicQuantizeLinear" in p for p in problems)
    assert any("not an explicitly quantized graph" in p for p in problems)


def test_int8_engine_of_a_non_qdq_graph_is_refused_before_building(clip_artifact, tmp_path):
    calls: list = []
    with pytest.raises(ConfigError, match="explicitly quantized"):
        build_engine(
            clip_artifact / "image.onnx",
            ProfileSpec(),
            "int8",
            tmp_path,
            gpu=GPU,
            trt_version=TRT_VERSION,
            serialize=fake_serialize(calls),
        )
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_static_int8_takes_the_form_its_target_runs(tiny_clip, tmp_path):
    """ONNX Runtime on x86 gets u8 activations (VNNI's u8 x s8), which TensorRT refuses with
    the reason; the TensorRT form is signed and symmetric, which it accepts."""
    from PIL import Image

    from ducho_fast.exporter.quantize import int8_candidates, quantize_static

    rng = np.random.default_rng(0)
    images = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(path)
        images.append(path)
    config = ExportConfig(
        ModelRef(str(tiny_clip), task="image"),
        tmp_path / "qdq",
        precision="int8",
        int8_mode="static",
        sample=Sample(images=tuple(images)),
    )
    folder = ducho_fast.export(config)
    problems = int8_problems(onnx.load(str(folder / "image.onnx")))
    assert any("not signed int8" in p for p in problems)

    fp32 = ducho_fast.export(replace(config, output_dir=tmp_path / "fp32", precision="fp32"))
    (_, height, width, _) = onnx_input_shape(fp32 / "image.onnx")
    calibration = [{"pixels": rng.integers(0, 256, (4, height, width, 3), dtype=np.uint8)}]
    for_trt = quantize_static(
        fp32 / "image.onnx", tmp_path / "trt.onnx", calibration, for_tensorrt=True
    )
    assert int8_problems(onnx.load(str(for_trt))) == []
    with pytest.raises(ConfigError, match="only static int8"):
        int8_candidates(fp32 / "image.onnx", tmp_path, "dynamic-per-tensor", [], True)


def onnx_input_shape(path: Path) -> list:
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value or d.dim_param for d in dims]


# --- graph rewrite for uint8 inputs -------------------------------------------------------


def test_uint8_inputs_are_cast_first_without_changing_outputs(clip_artifact, tmp_path):
    original = onnx.load(str(clip_artifact / "image.onnx"))
    rewritten = cast_uint8_inputs(onnx.load(str(clip_artifact / "image.onnx")))
    first = rewritten.graph.node[0]
    assert (first.op_type, list(first.input)) == ("Cast", ["pixels"])
    assert rewritten.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    users = [n for n in rewritten.graph.node[1:] if "pixels" in n.input]
    assert users == []
    onnx.checker.check_model(rewritten)
    path = tmp_path / "rewritten.onnx"
    onnx.save(rewritten, str(path))
    pixels = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    expected = OrtSession(clip_artifact / "image.onnx").run({"pixels": pixels})
    got = OrtSession(path).run({"pixels": pixels})
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value)
    assert len(original.graph.node) + 1 == len(rewritten.graph.node)


# --- the artifact: engines recorded and hashed in the manifest ----------------------------


def copy_artifact(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def with_fake_machine(monkeypatch, version: str = TRT_VERSION, gpu: GpuInfo = GPU) -> None:
    monkeypatch.setattr(tensorrt_artifact, "tensorrt_version", lambda: version)
    monkeypatch.setattr(tensorrt_artifact, "gpu_info", lambda: gpu)


def test_engines_are_recorded_and_hashed_in_the_manifest(clip_artifact, tmp_path, monkeypatch):
    with_fake_machine(monkeypatch)
    staging = copy_artifact(clip_artifact, tmp_path / "staging")
    manifest = read_manifest(staging)
    updated = add_tensorrt_engines(
        staging, manifest, cache_dir=tmp_path / "cache", serialize=fake_serialize()
    )
    reread = read_manifest(staging)  # verifies every hash, engines included
    assert reread == updated
    assert {"image.engine", "text.engine"} <= set(reread.files)
    section = TensorRTSection.from_manifest(reread)
    assert section is not None and section.version == TRT_VERSION and section.gpu == GPU
    assert set(section.engines) == {"image", "text"}
    text = section.engines["text"]
    assert text.shapes["input_ids"] == ShapeRange((1, 1), (32, 38), (64, 77))
    assert (staging / text.file).read_bytes().startswith(b"engine:text.onnx:fp32")
    saved = json.loads((staging / "manifest.json").read_text())
    assert saved["tensorrt"]["engines"]["image"]["profile"]["max_batch"] == 64
    assert section.engine_for("image", TRT_VERSION, GpuInfo("other", (8, 6))) is not None
    assert section.engine_for("image", "10.4.0", GPU) is None
    assert section.engine_for("image", TRT_VERSION, GpuInfo("NVIDIA H100", (9, 0))) is None


def test_export_hook_writes_engines_into_the_artifact(tiny_clip, tmp_path, monkeypatch):
    with_fake_machine(monkeypatch)
    monkeypatch.setattr(trt_export, "serialize_engine", fake_serialize())
    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "cache"))
    config = ExportConfig(ModelRef(str(tiny_clip), task="text"), tmp_path / "a", tensorrt=True)
    manifest = read_manifest(ducho_fast.export(config))
    assert manifest.tensorrt is not None and set(manifest.tensorrt["engines"]) == {"text"}
    assert "text.engine" in manifest.files
    assert len(list((tmp_path / "cache" / "tensorrt").glob("*.engine"))) == 1


def test_int8_export_for_tensorrt_fails_before_building(tiny_clip, tmp_path, monkeypatch):
    with_fake_machine(monkeypatch)
    calls: list = []
    monkeypatch.setattr(trt_export, "serialize_engine", fake_serialize(calls))
    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match="calibrated on your data"):
        ExportConfig(
            ModelRef(str(tiny_clip), task="image"), tmp_path / "a", precision="int8", tensorrt=True
        )
    assert calls == [] and list(tmp_path.iterdir()) == []


def test_manifests_without_engines_still_read(clip_artifact):
    manifest = read_manifest(clip_artifact)
    assert manifest.tensorrt is None and TensorRTSection.from_manifest(manifest) is None


def test_runtime_uses_the_artifact_engine_or_builds_one_for_this_gpu(
    clip_artifact, tmp_path, monkeypatch
):
    with_fake_machine(monkeypatch)
    staging = copy_artifact(clip_artifact, tmp_path / "art")
    manifest = add_tensorrt_engines(
        staging, read_manifest(staging), cache_dir=tmp_path / "c1", serialize=fake_serialize()
    )
    calls: list = []
    cache = tmp_path / "c2"
    args = (staging, manifest, "image")
    same = trt_runtime.locate_engine(*args, TRT_VERSION, GPU, cache, fake_serialize(calls))
    assert same == staging / "image.engine" and calls == []
    hopper = GpuInfo("NVIDIA H100", (9, 0))
    built = trt_runtime.locate_engine(*args, TRT_VERSION, hopper, cache, fake_serialize(calls))
    assert built.parent == cache and calls == [("image.onnx", "fp32")]
    fresh = read_manifest(clip_artifact)  # no engines at all: built on demand too
    path = trt_runtime.locate_engine(
        clip_artifact, fresh, "text", TRT_VERSION, GPU, cache, fake_serialize(calls)
    )
    assert path.parent == cache and calls[-1] == ("text.onnx", "fp32")


# --- session helpers (no GPU) -------------------------------------------------------------


def test_input_shapes_are_checked_against_the_profile():
    allowed = ShapeRange((1, 1), (32, 77), (64, 77))
    trt_runtime.check_input_shape("input_ids", (100, 77), allowed)  # big batch: run sliced
    with pytest.raises(InputError, match=r"'input_ids' has shape \(2, 78\).*\(1\.\.64, 1\.\.77\)"):
        trt_runtime.check_input_shape("input_ids", (2, 78), allowed)
    with pytest.raises(InputError, match="has shape"):
        trt_runtime.check_input_shape("input_ids", (2,), allowed)
    with pytest.raises(InputError, match="has shape"):
        trt_runtime.check_input_shape("input_ids", (0, 5), allowed)
    assert trt_runtime.batch_slices(130, 64) == [slice(0, 64), slice(64, 128), slice(128, 130)]


def test_dtypes_map_and_cast_only_within_their_kind():
    assert trt_runtime.numpy_dtype("UINT8") == np.uint8
    assert trt_runtime.numpy_dtype("INT64") == np.int64
    with pytest.raises(RuntimeUnavailableError, match="BF16"):
        trt_runtime.numpy_dtype("BF16")
    ids = np.array([[1, 2]], dtype=np.int64)
    assert trt_runtime.coerce_dtype("ids", ids, np.dtype(np.int32)).dtype == np.int32
    with pytest.raises(InputError, match="do not fit"):
        trt_runtime.coerce_dtype("ids", ids * 2**40, np.dtype(np.int32))
    with pytest.raises(InputError, match="float32, but the TensorRT engine takes uint8"):
        trt_runtime.coerce_dtype("pixels", np.zeros(2, np.float32), np.dtype(np.uint8))


# --- real engines: GPU + TensorRT ---------------------------------------------------------


def require_gpu_tensorrt() -> None:
    pytest.importorskip(
        "tensorrt", reason="TensorRT is not installed (pip install ducho-fast[gpu])"
    )
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")


def random_inputs(kind: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if kind == "image":
        return {"pixels": rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)}
    ids = rng.integers(1, 1000, (4, 77), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, 40:] = 0
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.gpu
@pytest.mark.trt
@pytest.mark.parametrize(("precision", "gate"), [("fp32", 0.9999), ("fp16", 0.999)])
def test_engines_match_onnxruntime(precision, gate, tiny_clip, tmp_path):
    require_gpu_tensorrt()
    config = ExportConfig(
        ModelRef(str(tiny_clip)), tmp_path / precision, precision=precision, tensorrt=True
    )
    folder = ducho_fast.export(config)
    manifest = read_manifest(folder)
    assert manifest.tensorrt is not None
    rng = np.random.default_rng(0)
    for kind in ("image", "text"):
        session = trt_runtime.TensorRTSession.from_artifact(folder, manifest, kind)
        reference = OrtSession(folder / manifest.graph(kind).file)
        inputs = random_inputs(kind, rng)
        got, expected = session.run(inputs), reference.run(inputs)
        assert set(session.output_names) == set(reference.output_names)
        for name, value in expected.items():
            assert got[name].shape == value.shape
            assert row_cosines(value, got[name]).min() >= gate, (kind, name)
