"""Export wrappers: one `nn.Module` per tower with named tensor inputs and outputs.

Image towers take uint8 NHWC pixels and do the cast, rescale, normalisation and layout change
inside the graph. Every output is flattened to (batch, features), the shape Ducho writes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ducho_fast.core.image import ImagePreprocessSpec, is_integral_reciprocal
from ducho_fast.models.spec import Tower


class PixelNormalize(nn.Module):
    """uint8 (N, H, W, 3) -> normalised float32 (N, 3, H, W), exactly as the processors do."""

    def __init__(self, spec: ImagePreprocessSpec):
        super().__init__()
        self.minmax = spec.normalization == "minmax"
        self.divide = is_integral_reciprocal(spec.rescale_factor)
        self.scale = round(1 / spec.rescale_factor) if self.divide else spec.rescale_factor
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(torch.float32)
        x = x / self.scale if self.divide else x * self.scale
        if self.minmax:  # Ducho's per-image min-max scaling instead of mean/std
            low = x.amin(dim=(1, 2, 3), keepdim=True)
            high = x.amax(dim=(1, 2, 3), keepdim=True)
            return (x - low) / (high - low)
        return (x - self.mean) / self.std


def flatten_batch(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(tensor.shape[0], -1)


class ImageTower(nn.Module):
    """pixels -> named outputs, given a function from normalised pixels to a tuple of tensors."""

    def __init__(
        self,
        spec: ImagePreprocessSpec,
        body: nn.Module,
        compute: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, ...]],
    ):
        super().__init__()
        self.normalize = PixelNormalize(spec)
        self.body = body
        self.compute = compute

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.compute(self.body, self.normalize(pixels))
        return tuple(flatten_batch(out) for out in outputs)


def ducho_item_shape(shape: tuple[int, ...], squeeze: bool) -> tuple[int, ...]:
    """An output's per-item shape as Ducho saves it, without the leading 1. Its torch backend
    squeezes size-1 axes (a pooled `(2048, 1, 1)` is `(2048,)`, a feature map `(2048, 7, 7)`
    stays whole); its transformers backend keeps the shape the model returns."""
    return (tuple(d for d in shape if d != 1) or (1,)) if squeeze else shape


def item_shapes(tower: Tower) -> dict[str, tuple[int, ...]]:
    """The outputs of an image tower that are more than a vector per item (feature maps,
    token sequences), by name, with Ducho's per-item shape: the graph flattens every output,
    and Ducho's layout puts the shape back. One forward pass at batch 1."""
    module = tower.module
    if not isinstance(module, ImageTower) or tower.preprocess is None:
        return {}
    try:
        height, width = tower.preprocess.input_size
    except ValueError:  # no fixed input size: outputs are vectors per item (pooled)
        return {}
    pixels = torch.randint(0, 256, (1, height, width, 3), dtype=torch.uint8)
    with torch.no_grad():
        outputs = module.compute(module.body, module.normalize(pixels))
    shapes = {
        name: ducho_item_shape(tuple(out.shape[1:]), tower.squeeze_outputs)
        for name, out in zip(tower.output_names, outputs, strict=True)
    }
    return {name: shape for name, shape in shapes.items() if len(shape) > 1}


class TextTower(nn.Module):
    """(input_ids, attention_mask) -> named outputs."""

    def __init__(
        self,
        body: nn.Module,
        compute: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]],
    ):
        super().__init__()
        self.body = body
        self.compute = compute

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        outputs = self.compute(self.body, input_ids, attention_mask)
        return tuple(flatten_batch(out) for out in outputs)
