"""Reduced-size JPEG decoding: opt-in, faster, and close to the exact path (measured here)."""

from __future__ import annotations

import shutil

import numpy as np

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.core.image import (
    ImagePreprocessSpec,
    decode_image,
    draft_side,
    preprocess_image,
)

CLIP_LIKE = ImagePreprocessSpec(
    "shortest_edge", 224, "bicubic", (224, 224), (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)
)


def test_draft_side_never_goes_below_the_model_input():
    torch_like = ImagePreprocessSpec("exact", (224, 320), "bicubic", None, (0,) * 3, (1,) * 3)
    assert draft_side([CLIP_LIKE]) == 224
    assert draft_side([CLIP_LIKE, torch_like]) == 320


def test_draft_decodes_smaller_but_preprocesses_close(large_photos):
    for photo in large_photos:
        exact_image = decode_image(photo)
        draft_image = decode_image(photo, draft_side([CLIP_LIKE]))
        assert draft_image.width < exact_image.width  # libjpeg really scaled it down
        assert min(draft_image.size) >= 224
        exact = preprocess_image(exact_image, CLIP_LIKE).astype(np.int16)
        draft = preprocess_image(draft_image, CLIP_LIKE).astype(np.int16)
        assert exact.shape == draft.shape
        assert np.abs(exact - draft).mean() < 5  # measured 1.4-3.6 levels of 255 on H&M photos


def test_draft_leaves_non_jpeg_files_exact(skimage_photos):
    png = next(p for p in skimage_photos if p.suffix == ".png")
    exact = preprocess_image(decode_image(png), CLIP_LIKE)
    np.testing.assert_array_equal(exact, preprocess_image(decode_image(png, 224), CLIP_LIKE))


def test_extraction_with_draft_decoding_stays_close(large_photos, tiny_clip, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for photo in large_photos:
        shutil.copy(photo, images / photo.name)
    features = {}
    for draft in (False, True):
        out = tmp_path / f"out-{draft}"
        job = SingleModelJob(str(tiny_clip), out, images=images)
        options = RunOptions(runtime="torch", progress=False, jpeg_draft=draft, workers=0)
        extract_single(job, options)
        folder = next(out.rglob("features.npy")).parent
        ids = (folder / "ids.txt").read_text().splitlines()
        features[draft] = (ids, np.load(folder / "features.npy"))
    assert features[False][0] == features[True][0]
    assert row_cosines(features[False][1], features[True][1]).min() >= 0.99
    assert not np.array_equal(features[False][1], features[True][1])  # the option is live
