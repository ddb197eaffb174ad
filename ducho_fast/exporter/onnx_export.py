"""torch -> ONNX for one tower: named inputs, dynamic batch (and sequence) axes."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ducho_fast.modalities import modality
from ducho_fast.models.spec import Tower

DEFAULT_OPSET = 18


def dynamic_axes(tower: Tower) -> dict[str, dict[int, str]]:
    """The modality's input axes, plus a dynamic batch axis on every output (and a frame
    axis on a sequence tower's)."""
    out_axes = {0: "batch", 1: "frames"} if tower.sequence else {0: "batch"}
    axes: dict[str, dict[int, str]] = {name: dict(out_axes) for name in tower.output_names}
    return {**axes, **modality(tower.name).input_axes()}


def export_tower(tower: Tower, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Export with the TorchScript-based exporter: one trace, dynamic axes, constants folded."""
    inputs = modality(tower.name).example_inputs(tower)
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
