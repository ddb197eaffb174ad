"""Reduced-size JPEG decoding: opt-in, faster, and close to the exact path (measured here)."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.core.image import (
    PIL_RESAMPLE,
    ImagePreprocessSpec,
    center_crop,
    decode_image,
    draft_side,
    preprocess_image,
    resize_target,
)

from .conftest import shared_set
from .synthetic import ORIENTATION_TAG, STORE_AS

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


def test_draft_resizes_to_the_size_of_the_full_decode():
    """libjpeg rounds a reduced size up (1295 px at 1/4 -> 324, covering 1296): a shortest-edge
    target computed from the drafted size came out one pixel off (346 rows, not 345)."""
    photo = shared_set("hm-fashion-sample") / "original" / "images" / "0519588005.jpg"
    torchvision_like = ImagePreprocessSpec(
        "shortest_edge", 256, "bilinear", None, (0,) * 3, (1,) * 3
    )
    exact = preprocess_image(decode_image(photo), torchvision_like)
    drafted = decode_image(photo, draft_side([torchvision_like]))
    assert drafted.width < 1295
    assert preprocess_image(drafted, torchvision_like).shape == exact.shape == (345, 256, 3)


def whole_image_resize(image: Image.Image, spec: ImagePreprocessSpec) -> np.ndarray:
    """The earlier draft path: the whole drafted image resized, as if it were the picture."""
    height, width = resize_target(spec, image.height, image.width)
    resized = image.resize((width, height), PIL_RESAMPLE[spec.interpolation])
    return center_crop(np.asarray(resized), spec.crop, spec.crop_rounding)


def test_draft_keeps_the_picture_geometry_in_every_exif_orientation(tmp_path):
    """A real 1166x1750 photo (partial 4-pixel blocks right and below) stored in EXIF
    orientations 1-8: the drafted picture is resized from its own area, wherever the rotation
    put the rounded-up edge, so it stays equally close to exact decoding in every orientation
    and closer than resizing the whole drafted image."""
    photo = shared_set("hm-fashion-sample") / "original" / "images" / "0270375001.jpg"
    upright = Image.open(photo).convert("RGB")
    assert upright.size == (1166, 1750)
    side = draft_side([CLIP_LIKE])
    errors, naive = [], []
    for orientation in range(1, 9):
        stored = upright.transpose(STORE_AS[orientation]) if orientation > 1 else upright
        exif = Image.Exif()
        exif[ORIENTATION_TAG] = orientation
        path = tmp_path / f"{orientation}.jpg"
        stored.save(path, quality=92, exif=exif.tobytes())
        exact = preprocess_image(decode_image(path), CLIP_LIKE).astype(np.int16)
        drafted = decode_image(path, side)
        errors.append(np.abs(preprocess_image(drafted, CLIP_LIKE) - exact).mean())
        naive.append(np.abs(whole_image_resize(drafted, CLIP_LIKE) - exact).mean())
    assert max(errors) < 1.05 * min(errors)  # a box on the wrong side: 1.6x upright's error
    assert all(e < n for e, n in zip(errors, naive, strict=True))
