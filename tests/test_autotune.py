"""`--runtime auto` / `--precision auto`: the fastest candidate above the fidelity floor."""

from __future__ import annotations

import pytest

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.core.errors import DuchoFastError
from ducho_fast.engine import autotune
from ducho_fast.models.spec import ModelRef
from ducho_fast.runtime.table import RUNTIMES, RuntimeChoice

# Fake speeds, so the choice is decided by the rule and not by this machine's load.
RATES = {("onnxruntime", "int8"): 300.0, ("openvino", "fp32"): 120.0}


def fake_rate(session, choice, inputs) -> float:
    return RATES.get((choice.runtime, choice.precision), 100.0)


@pytest.fixture
def fake_rates(monkeypatch, tmp_path):
    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(autotune, "time_candidate", fake_rate)


def openvino_here() -> bool:
    return RUNTIMES["openvino"].unavailable() is None


def test_auto_takes_the_fastest_that_keeps_fidelity(tiny_clip, jpeg_photos, tmp_path, fake_rates):
    job = SingleModelJob(str(tiny_clip), tmp_path / "out", images=jpeg_photos, batch_size=2)
    options = RunOptions(runtime="auto", precision="auto", progress=False, workers=0)
    (result,) = extract_single(job, options)
    line = result.metrics["runtime_choice"]
    assert "runtime onnxruntime int8 chosen by measurement" in line
    assert "onnxruntime fp32: 100.0 items/s, min cosine 1.00000" in line
    manifest = next((tmp_path / "out").rglob("manifest.json")).read_text()
    assert '"runtime": "onnxruntime"' in manifest and '"precision": "int8"' in manifest


def test_a_fidelity_floor_rules_out_reduced_precisions(tiny_clip, jpeg_photos, fake_rates):
    items = [autotune.Item(p.stem, str(p)) for p in sorted(jpeg_photos.iterdir())]
    pick = autotune.AutoPick(min_cosine=0.9999999)
    model = ModelRef(str(tiny_clip))
    choice, _ = autotune.auto_choice(model, "image", RuntimeChoice(), pick, items)
    expected = ("openvino", "fp32") if openvino_here() else ("onnxruntime", "fp32")
    assert (choice.runtime, choice.precision) == expected
    again, remembered = autotune.auto_choice(model, "image", RuntimeChoice(), pick, items)
    assert (again.runtime, again.precision) == expected and remembered.endswith("(remembered)")


def test_no_candidate_above_the_floor_is_an_error_with_the_figures(
    tiny_clip, jpeg_photos, fake_rates
):
    items = [autotune.Item(p.stem, str(p)) for p in sorted(jpeg_photos.iterdir())]
    pick = autotune.AutoPick(runtime="onnxruntime", precision="int8", min_cosine=0.99999999)
    with pytest.raises(DuchoFastError, match=r"no runtime x precision reaches cosine .*int8: 300"):
        autotune.auto_choice(ModelRef(str(tiny_clip)), "image", RuntimeChoice(), pick, items)


def test_auto_candidates_follow_the_runtime_table():
    assert ("onnxruntime", "fp16") not in autotune.AutoPick().candidates()  # a GPU precision
    assert ("torch", "fp32") not in autotune.AutoPick().candidates()  # eager: chosen explicitly
    assert autotune.AutoPick(precision="int8").candidates()[0] == ("onnxruntime", "int8")
    fp32_only = autotune.AutoPick(precision="fp32").candidates()
    assert fp32_only and all(precision == "fp32" for _, precision in fp32_only)


def test_the_default_is_the_fastest_runtime_giving_fp32s_values(
    tiny_clip, jpeg_photos, tmp_path, fake_rates
):
    pytest.importorskip("openvino")
    job = SingleModelJob(str(tiny_clip), tmp_path / "out", images=jpeg_photos, batch_size=2)
    (result,) = extract_single(job, RunOptions(progress=False, workers=0))  # no runtime given
    line = result.metrics["runtime_choice"]
    assert "runtime openvino fp32 chosen by measurement" in line
    assert "max-abs" in line and "below the gate" not in line
    written = {p.parent.parent.name for p in (tmp_path / "out").glob("*/*/features.npy")}
    assert written == {tiny_clip.name}  # fp32: the model's own folder name, whatever the runtime


def test_a_mis_scaled_fp32_runtime_is_never_chosen(tiny_clip, jpeg_photos, fake_rates, monkeypatch):
    """Cosine alone would pass a runtime whose values are 1% off: the fp32 gate checks max-abs."""
    from ducho_fast.runtime import openvino

    pytest.importorskip("openvino")
    real_run = openvino.OpenVinoSession.run
    monkeypatch.setattr(
        openvino.OpenVinoSession,
        "run",
        lambda self, inputs: {k: v * 1.01 for k, v in real_run(self, inputs).items()},
    )
    items = [autotune.Item(p.stem, str(p)) for p in sorted(jpeg_photos.iterdir())]
    pick = autotune.AutoPick(precision="fp32")
    choice, line = autotune.auto_choice(
        ModelRef(str(tiny_clip)), "image", RuntimeChoice(), pick, items
    )
    assert choice.runtime == "onnxruntime"  # openvino is faster here (fake rates) but off
    assert "openvino fp32: 120.0 items/s, min cosine 1.00000" in line and "below the gate" in line


def test_a_gpu_precision_or_provider_names_onnxruntime():
    assert autotune.planned_choice("auto", "fp16")[0].runtime == "onnxruntime"
    choice, pick = autotune.planned_choice("auto", "fp32", ort_provider="cuda")
    assert (choice.runtime, pick) == ("onnxruntime", None)
    assert autotune.planned_choice("auto", "fp32")[1] == autotune.AutoPick(precision="fp32")


def test_a_reduced_precision_keeps_a_fixed_runtime_and_auto_never_picks_a_gpu():
    assert autotune.default_runtime("fp32") == autotune.default_runtime("auto") == "auto"
    assert autotune.default_runtime("int8") == "onnxruntime"  # `-int8-onnxruntime` as before
    assert autotune.default_runtime("bf16") == "openvino"
    assert all(runtime != "tensorrt" for runtime, _ in autotune.AutoPick().candidates())


def test_only_the_gated_cpu_runtimes_share_an_fp32_pass():
    from ducho_fast.engine.state import runtime_free

    def fingerprint(runtime: str, provider: str | None, precision: str = "fp32") -> dict:
        model = {"model": "m", "runtime": runtime, "ort_provider": provider}
        return {"pass": "p", "models": [{**model, "precision": precision}]}

    ort, ov = fingerprint("onnxruntime", "cpu"), fingerprint("openvino", None)
    assert runtime_free(ort) == runtime_free(ov)
    assert runtime_free(fingerprint("onnxruntime", "cuda")) != runtime_free(ort)
    assert runtime_free(fingerprint("torch", None)) != runtime_free(ort)
    assert runtime_free(fingerprint("openvino", None, "int8")) != runtime_free(
        fingerprint("onnxruntime", "cpu", "int8")
    )
