"""OpenVINO runtime: the same artifacts as ONNX Runtime, fp32 exact, bf16 gated."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ducho_fast import resolve
from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.core.cache import resolve_cache_dir
from ducho_fast.core.errors import (
    ConfigError,
    DuchoFastError,
    ExportValidationError,
    RuntimeUnavailableError,
)
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.models.spec import ModelRef
from ducho_fast.resolve import open_model
from ducho_fast.runtime.table import RuntimeChoice

ov = pytest.importorskip("openvino", reason="pip install openvino (in ducho-fast[cpu])")
native_bf16 = pytest.mark.skipif(
    "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"),
    reason="this CPU has no native bf16 (OpenVINO refuses bf16 here, tested below)",
)


def outputs(kind: str, runtime: str, precision: str, model: Path) -> tuple[np.ndarray, object]:
    opened = open_model(ModelRef(str(model)), kind, RuntimeChoice(runtime, precision))
    inputs = opened.modality.artifact_cases(opened.feed, resolve.NO_SAMPLE)[-1][1]
    return opened.session.run(inputs)[opened.output_names[0]], opened.session


@pytest.mark.parametrize("kind", ["image", "text"])
def test_fp32_is_fp32_and_matches_onnxruntime(tiny_clip, kind):
    expected, _ = outputs(kind, "onnxruntime", "fp32", tiny_clip)
    got, session = outputs(kind, "openvino", "fp32", tiny_clip)
    assert session.inference_precision() == "f32"  # never OpenVINO's own bf16 default
    assert row_cosines(expected, got).min() >= 0.9999
    assert np.abs(expected - got).max() <= 1e-4 * max(1.0, float(np.abs(expected).max()))


@native_bf16
def test_bf16_passes_its_gate_and_really_runs_bf16(tiny_clip):
    fp32, _ = outputs("image", "openvino", "fp32", tiny_clip)
    bf16, session = outputs("image", "openvino", "bf16", tiny_clip)
    assert session.inference_precision() == "bf16"
    assert row_cosines(fp32, bf16).min() >= 0.99
    assert not np.array_equal(fp32, bf16)


@native_bf16
def test_bf16_below_its_gate_is_refused(tiny_clip, monkeypatch):
    monkeypatch.setattr(resolve, "REDUCED_MIN_COSINE", 1.000001)
    with pytest.raises(DuchoFastError, match=r"openvino bf16 fails its fidelity gate \(batch="):
        open_model(ModelRef(str(tiny_clip)), "text", RuntimeChoice("openvino", "bf16"))


@native_bf16
def test_a_passed_runtime_gate_is_remembered_and_a_new_floor_gates_again(tiny_clip, monkeypatch):
    """The gate against ONNX Runtime runs once per graph, inputs, floor, versions and CPU: a
    rerun does not pay for it, and a stricter floor is checked, not taken from memory."""
    (resolve_cache_dir() / resolve.RUNTIME_GATES_FILE).unlink(missing_ok=True)
    gated = []
    real_gate = resolve.fidelity_gate
    monkeypatch.setattr(resolve, "fidelity_gate", lambda *a: gated.append(a[0]) or real_gate(*a))
    for _ in range(2):
        open_model(ModelRef(str(tiny_clip)), "text", RuntimeChoice("openvino", "bf16"))
    assert gated == ["openvino bf16"]
    monkeypatch.setattr(resolve, "REDUCED_MIN_COSINE", 1.000001)
    with pytest.raises(DuchoFastError, match="openvino bf16 fails its fidelity gate"):
        open_model(ModelRef(str(tiny_clip)), "text", RuntimeChoice("openvino", "bf16"))
    assert gated == ["openvino bf16"] * 2


def test_extraction_on_openvino_equals_onnxruntime(tiny_clip, jpeg_photos, tmp_path):
    features = {}
    for runtime in ("onnxruntime", "openvino"):
        job = SingleModelJob(str(tiny_clip), tmp_path / runtime, images=jpeg_photos, batch_size=4)
        (result,) = extract_single(job, RunOptions(runtime=runtime, progress=False))
        assert result.succeeded == 6
        folder = next((tmp_path / runtime).rglob("features.npy")).parent
        features[runtime] = np.load(folder / "features.npy")
        assert f'"runtime": "{runtime}"' in (folder / "manifest.json").read_text()
    assert row_cosines(features["onnxruntime"], features["openvino"]).min() >= 0.9999


@native_bf16
def test_bf16_output_is_never_mixed_with_fp32(tiny_clip, jpeg_photos, tmp_path):
    """bf16 writes beside fp32 (precision in the path, #14), never into its folder."""
    job = SingleModelJob(str(tiny_clip), tmp_path / "out", images=jpeg_photos, batch_size=4)
    extract_single(job, RunOptions(runtime="openvino", progress=False))
    fp32 = tmp_path / "out" / tiny_clip.name / "image_embeds" / "features.npy"
    before = np.load(fp32)
    extract_single(job, RunOptions(runtime="openvino", precision="bf16", progress=False))
    bf16 = tmp_path / "out" / f"{tiny_clip.name}-bf16-openvino" / "image_embeds" / "features.npy"
    assert np.array_equal(np.load(fp32), before) and not np.array_equal(np.load(bf16), before)


def test_text_cases_cover_short_and_truncated_texts(tiny_clip):
    opened = open_model(ModelRef(str(tiny_clip)), "text", RuntimeChoice("onnxruntime", "fp32"))
    cases = opened.modality.artifact_cases(opened.feed, resolve.NO_SAMPLE)
    assert [name for name, _ in cases] == ["batch=1", "batch=3", "batch=17"]
    widest = max(inputs["input_ids"].shape[1] for _, inputs in cases)
    assert widest == 77  # synthetic texts run past CLIP's maximum: truncated, as in a run


def test_missing_openvino_says_how_to_install(tiny_clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(RuntimeUnavailableError, match="OpenVINO is not installed: install it"):
        open_model(ModelRef(str(tiny_clip)), "image", RuntimeChoice("openvino", "fp32"))


def test_int8_runs_the_nncf_graph_calibrated_on_the_run(tiny_resnet, jpeg_photos, tmp_path):
    """OpenVINO int8 exports NNCF's QDQ graph calibrated on the run's own jpeg_photos, runs it
    with int8 kernels and is gated against ONNX Runtime on the same graph; fp32 stays the
    reference."""
    features = {}
    for precision in ("fp32", "int8"):
        job = SingleModelJob(
            str(tiny_resnet), tmp_path / precision, images=jpeg_photos, batch_size=3
        )
        options = RunOptions(runtime="openvino", precision=precision, progress=False)
        (result,) = extract_single(job, options)
        assert result.succeeded == 6
        folder = next((tmp_path / precision).rglob("features.npy")).parent
        features[precision] = np.load(folder / "features.npy")
        manifest = (folder / "manifest.json").read_text()
        assert f'"precision": "{precision}"' in manifest
    assert '"quantization": "nncf"' in manifest
    assert row_cosines(features["fp32"], features["int8"]).min() >= 0.99
    assert not np.array_equal(features["fp32"], features["int8"])


def test_int8_refuses_a_dynamic_int8_artifact(tiny_st, tmp_path):
    from ducho_fast import ExportConfig, export

    config = ExportConfig(ModelRef(str(tiny_st)), tmp_path / "dyn", precision="int8")
    folder = export(config)
    with pytest.raises(ConfigError, match="openvino int8 runs calibrated \\(QDQ\\) int8 graphs"):
        open_model(ModelRef(str(folder)), "text", RuntimeChoice("openvino", "int8"))


def test_int8_without_items_to_calibrate_on_says_how(tiny_resnet, tmp_path, monkeypatch):
    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=r"calibrates int8 on your items.*--int8-mode nncf"):
        open_model(ModelRef(str(tiny_resnet)), "image", RuntimeChoice("openvino", "int8"))


def test_gates_refuse_nan_and_one_sided_zero_rows():
    from ducho_fast.core.fidelity import row_cosines, worst_cosine

    good = np.array([[1.0, 2.0], [0.0, 0.0]])
    np.testing.assert_allclose(row_cosines(good, good), [1.0, 1.0])  # both-zero rows: equal
    assert row_cosines(good, np.zeros((2, 2)))[0] == 0.0  # one side zero: not equal
    broken = np.array([[np.nan, 1.0], [0.0, 0.0]])
    assert np.isnan(worst_cosine(good, broken))
    assert not worst_cosine(good, broken) >= 0.99


def test_load_runs_what_was_asked_or_refuses(tiny_clip, jpeg_photos):
    import ducho_fast
    from ducho_fast.resolve import artifact_folder

    open_model(ModelRef(str(tiny_clip)), "image", RuntimeChoice())  # exports the fp32 artifact
    folder = artifact_folder(ModelRef(str(tiny_clip)), RuntimeChoice())
    photos = sorted(jpeg_photos.iterdir())
    fp32 = ducho_fast.load(folder).encode_images(photos)
    on_openvino = ducho_fast.load(folder, RuntimeChoice("openvino", "fp32")).encode_images(photos)
    assert row_cosines(fp32, on_openvino).min() >= 0.9999
    with pytest.raises(ConfigError, match="is fp32, but onnxruntime int8 runs a int8 artifact"):
        ducho_fast.load(folder, RuntimeChoice("onnxruntime", "int8")).encode_images(photos)


def test_int8_of_a_dual_encoder_calibrates_each_tower_on_its_own_run(
    tiny_clip, jpeg_photos, tmp_path, monkeypatch
):
    """A CLIP image run holds only images: its on-the-fly int8 export quantizes the image tower
    alone, on those images, in a folder of its own. The text run then calibrates its text
    tower on its texts (the tiny random text tower fails its gate, loudly, after calibrating:
    before, it stopped at "needs a calibration sample")."""
    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "cache"))
    options = RunOptions(runtime="openvino", precision="int8", progress=False)
    job = SingleModelJob(str(tiny_clip), tmp_path / "image", images=jpeg_photos, batch_size=3)
    (result,) = extract_single(job, options)
    assert result.succeeded == 6
    folder = next((tmp_path / "image").rglob("features.npy")).parent
    assert '"quantization": "nncf"' in (folder / "manifest.json").read_text()
    (artifact,) = (tmp_path / "cache" / "artifacts").glob("*/manifest.json")
    assert [g["name"] for g in json.loads(artifact.read_text())["graphs"]] == ["image"]

    texts = tmp_path / "texts.tsv"
    rows = "".join(f"{i}\ta photo of item {i}, red cotton\n" for i in range(12))
    texts.write_text("id\ttext\n" + rows)
    job = SingleModelJob(str(tiny_clip), tmp_path / "text", texts=texts, batch_size=3)
    with pytest.raises(ExportValidationError, match=r"(?s)int8 \(nncf.*text/text_embeds"):
        extract_single(job, options)
