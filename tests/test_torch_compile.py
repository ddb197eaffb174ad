"""The torch-compile runtime: the same features as eager through the real pipeline."""

from __future__ import annotations

import numpy as np

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.core.fidelity import row_cosines


def test_compiled_extraction_equals_eager(tiny_clip, five_photos, tmp_path):
    """Batch 2 over 5 photos: a full and a partial batch, so the dynamic-shape graph is
    exercised (inductor compiles once, ~30 s on 2 cores)."""
    features = {}
    for runtime in ("torch", "torch-compile"):
        out = tmp_path / runtime
        job = SingleModelJob(str(tiny_clip), out, images=five_photos, batch_size=2)
        extract_single(job, RunOptions(runtime=runtime, progress=False, workers=0))
        folder = next(out.rglob("features.npy")).parent
        features[runtime] = np.load(folder / "features.npy")
        assert f'"runtime": "{runtime}"' in (folder / "manifest.json").read_text()
    assert features["torch"].shape == features["torch-compile"].shape == (5, 16)
    assert row_cosines(features["torch"], features["torch-compile"]).min() >= 0.9999
    np.testing.assert_allclose(features["torch"], features["torch-compile"], atol=1e-5)
