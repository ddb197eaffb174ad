"""Start-up: a run of a model that is already exported never imports torch (1.5 s of a short
command here, once an import of the fidelity gates pulled it in through the exporter)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from ducho_fast.models.spec import ModelRef
from ducho_fast.resolve import open_model
from ducho_fast.runtime.table import RuntimeChoice

WITHOUT_TORCH = (
    "import sys; sys.modules['torch'] = None; "  # any import of torch now raises ImportError
    "from ducho_fast.cli import main; main(sys.argv[1:])"
)


def test_a_run_of_an_exported_model_never_imports_torch(tiny_clip, jpeg_photos, tmp_path):
    open_model(ModelRef(str(tiny_clip)), "image", RuntimeChoice())  # the export needs torch
    output = tmp_path / "out"
    args = ["extract", "--model", tiny_clip, "--images", jpeg_photos, "-o", output]
    command = [sys.executable, "-c", WITHOUT_TORCH, *map(str, args), "--batch-size", "4"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(np.load(next(output.rglob("features.npy")))) == 6
