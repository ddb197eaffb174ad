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
