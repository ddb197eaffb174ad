"""Decoding without the full-size copy `ImageOps.exif_transpose` makes: byte for byte the
pixels of the copying path, on every real photo, mode and EXIF orientation we have."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageOps

from ducho_fast.core.image import decode_image

from .conftest import shared_set

SETS = ("skimage-data", "exif-orientation", "sharp-fixtures", "abo-product-samples")


def copying_decode(path: Path) -> Image.Image:
    """The earlier path: a transposed copy of the opened image, then RGB."""
    with Image.open(path) as opened:
        opened.seek(0)
        image = ImageOps.exif_transpose(opened)
    return image if image.mode == "RGB" else image.convert("RGB")


def photos(name: str) -> list[Path]:
    """Every file of the set but its notes (MANIFEST.tsv, SOURCE.txt, README.md, ...)."""
    notes = {".tsv", ".txt", ".md", ".json", ".csv"}
    return sorted(p for p in shared_set(name).rglob("*") if p.is_file() and p.suffix not in notes)


@pytest.mark.parametrize("name", SETS)
def test_decoding_in_place_gives_the_same_bytes(name):
    compared = 0
    for path in photos(name):
        try:
            expected = copying_decode(path)
        except Exception as exc:  # broken fixtures: the in-place path must fail the same way
            with pytest.raises(type(exc)):
                decode_image(path)
            continue
        got = decode_image(path)
        assert (got.mode, got.size) == (expected.mode, expected.size), path.name
        assert got.tobytes() == expected.tobytes(), path.name
        compared += 1
    assert compared > 0


def test_large_photos_decode_to_the_same_bytes():
    folder = shared_set("hm-fashion-sample") / "original" / "images"
    for path in sorted(folder.glob("*.jpg"))[:8]:
        assert decode_image(path).tobytes() == copying_decode(path).tobytes(), path.name
