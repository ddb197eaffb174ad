"""The synthetic stand-ins for ../shared are what the tests using them assume (checked in CI too,
where ../shared is present and the stand-ins would otherwise never be built)."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from ducho_fast.core.image import decode_image

from . import synthetic


def test_mode_photos_have_the_real_sets_modes_and_order(tmp_path):
    photos = synthetic.mode_photos(tmp_path)
    modes = []
    for path in photos:
        with Image.open(path) as image:
            modes.append(image.mode)
    assert modes == ["RGB", "RGB", "RGB", "L", "RGBA", "RGB", "P", "I;16"]
    assert [p.suffix for p in photos].count(".jpg") == 1 and photos[0].suffix == ".png"
    with Image.open(photos[4]) as rgba:
        alpha = np.asarray(rgba)[..., 3]
    assert alpha.min() == 0 and alpha.max() == 255  # a real alpha channel, not opaque


def test_exif_orientations_undo_to_the_same_upright_photo(tmp_path):
    folder = synthetic.exif_orientations(tmp_path)
    for kind in ("Landscape", "Portrait"):
        upright = np.asarray(decode_image(folder / f"{kind}_1.jpg"), dtype=np.int16)
        for orientation in range(9):
            path = folder / f"{kind}_{orientation}.jpg"
            with Image.open(path) as raw:
                assert raw.getexif()[synthetic.ORIENTATION_TAG] == orientation
                stored = np.asarray(raw.convert("RGB"), dtype=np.int16)
            decoded = np.asarray(decode_image(path), dtype=np.int16)
            assert decoded.shape == upright.shape
            assert np.abs(decoded - upright).mean() < 3, path.name  # JPEG noise only
            if orientation > 1:  # ignoring the tag must show: a loader that does is caught
                assert stored.shape != upright.shape or np.abs(stored - upright).mean() > 30


def test_hm_items_keep_the_real_samples_counts(tmp_path):
    folder = synthetic.hm_items(tmp_path, 100)
    with (folder / "items.tsv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    ids = [row["article_id"] for row in rows]
    assert len(ids) == len(set(ids)) == 100 and all(len(i) == 10 and i[0] == "0" for i in ids)
    assert sorted(p.stem for p in (folder / "images").glob("*.jpg")) == sorted(ids)
    empty = [row["article_id"] for row in rows if not row["detail_desc"].strip()]
    assert empty == [synthetic.HM_EMPTY_TEXT_ID]
    assert max(len(row["detail_desc"].split()) for row in rows) > 77  # past CLIP's context


def test_large_and_product_photos_have_the_real_sizes(tmp_path):
    for path in synthetic.large_photos(tmp_path / "large", 2):
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.height == 1750 and image.width > 1000
    products = synthetic.product_photos(tmp_path / "products", 3)
    assert [p.name for p in products] == sorted(p.name for p in products)
    with Image.open(products[0]) as image:
        assert (image.format, image.size) == ("JPEG", (60, 80))


def test_edge_cases_decode_exactly_when_they_should(tmp_path):
    made = synthetic.broken_and_odd_images(tmp_path)
    modes = set()
    for name, item in made.items():
        if item.fails == "decode":
            try:
                decode_image(tmp_path / name)
            except (OSError, Image.DecompressionBombError):
                continue
            raise AssertionError(f"{name} ({item.what}) decodes")
        with Image.open(tmp_path / name) as image:
            modes.add(image.mode)
        assert decode_image(tmp_path / name).mode == "RGB", name
    assert {"RGB", "L", "CMYK", "RGBA", "LA", "P", "1", "I;16"} <= modes
