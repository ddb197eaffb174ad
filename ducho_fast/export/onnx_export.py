"""torch -> ONNX for one tower: named inputs, dynamic batch (and sequence) axes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ducho_fast.models.spec import Tower

DEFAULT_OPSET = 18


def example_inputs(tower: Tower, batch: int = 2, seq_len: int = 8) -> dict[str, np.ndarray]:
    """Small deterministic inputs used only to trace the graph."""
    rng = np.random.default_rng(0)
    if tower.name == "image":
        assert tower.image is not None
        height, width = tower.image.input_size
        return {"pixels": rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8)}
    vocab = max(int(getattr(tower.tokenizer, "vocab_size", 100)), 10)
    ids = rng.integers(1, vocab - 1, (batch, seq_len), dtype=np.int64)
    mask = np.ones((batch, seq_len), dtype=np.int64)
    mask[-1, seq_len // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def dynamic_axes(tower: Tower) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in tower.output_names}
    if tower.name == "image":
        axes["pixels"] = {0: "batch"}
    else:
        axes["input_ids"] = {0: "batch", 1: "sequence"}
        axes["attention_mask"] = {0: "batch", 1: "sequence"}
    return axes


def export_tower(tower: Tower, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export with the TorchScript-based exporter: one trace, dynamic axes, constants folded."""
    inputs = example_inputs(tower)
    args = tuple(torch.from_numpy(value) for value in inputs.values())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tower.module,
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(tower.output_names),
            dynamic_axes=dynamic_axes(tower),
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return path


def eager_outputs(tower: Tower, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference: the eager PyTorch tower on the same named inputs."""
    with torch.inference_mode():
        outputs = tower.module(*(torch.from_numpy(inputs[name]) for name in inputs))
    return {
        name: out.detach().float().numpy()
        for name, out in zip(tower.output_names, outputs, strict=True)
    }
