"""PyTorch runtimes (eager and torch.compile) behind the same Session surface as ORT."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ducho_fast.models.spec import Tower


class TorchSession:
    """Runs a tower's export wrapper in PyTorch: identical inputs and outputs to its graph."""

    def __init__(
        self, tower: Tower, compiled: bool = False, threads: int | None = None, bf16: bool = False
    ):
        if threads:
            torch.set_num_threads(threads)
        self.tower = tower
        self.bf16 = bf16
        self.module = torch.compile(tower.module, dynamic=True) if compiled else tower.module
        self.input_names = ("pixels",) if tower.name == "image" else ("input_ids", "attention_mask")
        self.output_names = tower.output_names

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            outputs = self.module(*(torch.from_numpy(inputs[name]) for name in self.input_names))
        return {
            name: out.float().numpy() for name, out in zip(self.output_names, outputs, strict=True)
        }
