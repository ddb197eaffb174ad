"""bf16 on the torch runtimes: autocast where the CPU has native bf16, gated on fidelity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.core.errors import ConfigError, RuntimeUnavailableError
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.models.spec import ModelRef
from ducho_fast.resolve import open_model
from ducho_fast.runtime.table import RuntimeChoice

native_bf16 = pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no native bf16"
)


@native_bf16
def test_bf16_extraction_stays_close_to_fp32(tiny_clip, five_photos, tmp_path):
    features = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        job = SingleModelJob(str(tiny_clip), out, images=five_photos)
        options = RunOptions(runtime="torch", precision=precision, progress=False, workers=0)
        extract_single(job, options)
        folder = next(out.rglob("features.npy")).parent
        features[precision] = np.load(folder / "features.npy")
        assert '"precision": "' + precision in (folder / "manifest.json").read_text()
    assert row_cosines(features["fp32"], features["bf16"]).min() >= 0.99
    assert not np.array_equal(features["fp32"], features["bf16"])


def test_bf16_without_native_support_is_refused(tiny_clip, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    choice = RuntimeChoice("torch", "bf16")
    with pytest.raises(RuntimeUnavailableError, match="no native bf16"):
        open_model(ModelRef(str(tiny_clip), task="image"), "image", choice)


def test_bf16_is_a_torch_precision(tiny_clip, tmp_path):
    with pytest.raises(ConfigError, match=r"not bf16; bf16 runs on \['torch', 'torch-compile'"):
        RuntimeChoice("onnxruntime", "bf16", cache_dir=tmp_path)
