"""CPU-side preprocessing: decode, orient, convert to RGB, resize and crop to uint8 pixels.

Only the geometric part runs on the CPU; rescale and mean/std normalisation live inside the
exported graph (see `models.towers.PixelNormalize`), so batches travel as compact uint8 arrays.
The rules reproduce the reference processors exactly (Hugging Face image processors and
torchvision transforms) so features match the eager model.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
from PIL import Image, ImageOps

ResizeMode = Literal["shortest_edge", "exact"]
Interpolation = Literal["nearest", "bilinear", "bicubic", "lanczos"]
CropRounding = Literal["floor", "round"]
Normalization = Literal["zscore", "minmax"]

PIL_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImagePreprocessSpec:
    """How an image becomes model input; travels with the weights and the artifact manifest.

    `resize` is the target of the shortest edge (`shortest_edge`) or `(height, width)` (`exact`).
    `crop_rounding` is `floor` for Hugging Face processors and `round` for torchvision.
    """

    resize_mode: ResizeMode
    resize: tuple[int, int] | int
    interpolation: Interpolation
    crop: tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float = 1 / 255
    crop_rounding: CropRounding = "floor"
    normalization: Normalization = "zscore"

    @property
    def input_size(self) -> tuple[int, int]:
        """The (height, width) of the uint8 pixels the graph receives."""
        if self.crop is not None:
            return self.crop
        if self.resize_mode == "exact":
            assert not isinstance(self.resize, int)
            return self.resize
        raise ValueError("a shortest-edge resize without a crop gives no fixed input size")

    def to_dict(self) -> dict:
        return {
            "resize_mode": self.resize_mode,
            "resize": self.resize if isinstance(self.resize, int) else list(self.resize),
            "interpolation": self.interpolation,
            "crop": list(self.crop) if self.crop else None,
            "crop_rounding": self.crop_rounding,
            "mean": list(self.mean),
            "std": list(self.std),
            "rescale_factor": self.rescale_factor,
            "normalization": self.normalization,
            "channel_order": "RGB",
            "layout": "NHWC uint8",
        }

    @classmethod
    def from_dict(cls, data: dict) -> ImagePreprocessSpec:
        resize = data["resize"]
        return cls(
            resize_mode=data["resize_mode"],
            resize=resize if isinstance(resize, int) else (int(resize[0]), int(resize[1])),
            interpolation=data["interpolation"],
            crop=tuple(data["crop"]) if data.get("crop") else None,  # type: ignore[arg-type]
            mean=tuple(data["mean"]),  # type: ignore[arg-type]
            std=tuple(data["std"]),  # type: ignore[arg-type]
            rescale_factor=float(data["rescale_factor"]),
            crop_rounding=data.get("crop_rounding", "floor"),
            normalization=data.get("normalization", "zscore"),
        )


@functools.cache
def register_plugins() -> tuple[str, ...]:
    """Pillow openers for formats it lacks, when their plugins are installed (the `heif`
    extra: HEIC/HEIF photos, as iPhones take them). Pillow reads AVIF itself (11.3+).
    Called where images are decoded, so every worker process registers them."""
    registered = []
    with contextlib.suppress(ImportError):
        import pillow_heif

        pillow_heif.register_heif_opener()
        registered.append("heif")
    return tuple(registered)


def decode_image(
    source: str | Path | BinaryIO | Image.Image, draft_side: int | None = None
) -> Image.Image:
    """Open an image as the reference processors see it, plus EXIF orientation.

    First frame of animated files; any mode converted with `convert("RGB")` exactly as the
    Hugging Face `convert_rgb` step does. Pillow's decompression-bomb limit stays on.
    `draft_side` (opt-in, not exact) lets libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale, never
    with a side below `draft_side`: much faster for large photos that are resized anyway. A
    drafted image carries its geometry in `info` (see `draft_geometry`) so the resize maps the
    same picture area, and to the same size, as it would from the full-size decode.
    """
    register_plugins()
    if isinstance(source, Image.Image):
        image = ImageOps.exif_transpose(source)
    else:
        if isinstance(source, (str, Path)):  # bytes in memory (a table's cell) cannot block
            require_regular_file(source)
        with Image.open(source) as opened:
            drafted, full_size = None, opened.size
            if draft_side and opened.format == "JPEG":
                drafted = opened.draft(opened.mode, (draft_side, draft_side))
            opened.seek(0)
            orientation = opened.getexif().get(ORIENTATION, 1)
            ImageOps.exif_transpose(opened, in_place=True)  # loads; no full-size copy (-20%)
            image = opened
        if drafted is not None and full_size != drafted[1][2:]:
            record_draft(image, full_size, drafted[1], orientation)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


ORIENTATION = 0x0112  # the EXIF tag
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}  # as `ImageOps.exif_transpose` applies them
DRAFT_BOX = "ducho_fast.draft_box"
SOURCE_SIZE = "ducho_fast.source_size"


def record_draft(
    image: Image.Image, full_size: tuple[int, int], box: tuple[float, ...], orientation: int
) -> None:
    """Note in `image.info` the full-size decode's (width, height) and which area of the
    (oriented) drafted image holds the whole picture.

    libjpeg's reduced decode rounds sizes up (1166 px at 1/4 -> 292, covering 1168 source px),
    so resizing the whole drafted image stretches the picture slightly and shifts it by up to
    half a drafted pixel, and a shortest-edge target computed from the drafted size can be off
    by one; `preprocess_image` resizes `box` to the full-size target instead.
    """
    box_w, box_h = box[2], box[3]
    method = EXIF_TRANSPOSE.get(orientation)
    if method in SWAPS_AXES:
        box_w, box_h, full_size = box_h, box_w, (full_size[1], full_size[0])
    left, top = ORIGIN_CORNER.get(method, (True, True))
    x0 = 0.0 if left else image.width - box_w
    y0 = 0.0 if top else image.height - box_h
    image.info[DRAFT_BOX] = (x0, y0, x0 + box_w, y0 + box_h)
    image.info[SOURCE_SIZE] = full_size


SWAPS_AXES = frozenset(
    (
        Image.Transpose.TRANSPOSE,
        Image.Transpose.TRANSVERSE,
        Image.Transpose.ROTATE_90,
        Image.Transpose.ROTATE_270,
    )
)
# where the decoded image's top-left corner (the drafted picture's origin; the rounded-up
# partial blocks lie right and below it) ends up: (on the left, at the top)
ORIGIN_CORNER = {
    Image.Transpose.FLIP_LEFT_RIGHT: (False, True),
    Image.Transpose.ROTATE_180: (False, False),
    Image.Transpose.FLIP_TOP_BOTTOM: (True, False),
    Image.Transpose.TRANSPOSE: (True, True),
    Image.Transpose.ROTATE_270: (False, True),
    Image.Transpose.TRANSVERSE: (False, False),
    Image.Transpose.ROTATE_90: (True, False),
}


def draft_geometry(image: Image.Image) -> tuple[tuple[int, int], tuple[float, ...] | None]:
    """(full-size (width, height), area to resize) of a decoded image; no area if not drafted."""
    return image.info.get(SOURCE_SIZE, image.size), image.info.get(DRAFT_BOX)


NOT_REGULAR = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}


def require_regular_file(path: str | Path) -> None:
    """Refuse what is not a regular file before opening it: opening a FIFO blocks until a
    writer comes, and a device can be read forever, so no timeout would be needed to hang."""
    kind = stat.S_IFMT(os.stat(path).st_mode)
    if kind != stat.S_IFREG:
        what = NOT_REGULAR.get(kind, "a special file")
        raise ValueError(f"{what}, not a regular file: not read (it could block forever)")


DRAFT_MARGIN = 1.0  # decoded side >= margin x the largest target side (measured: benchmarks)


def draft_side(specs: Iterable[ImagePreprocessSpec], margin: float = DRAFT_MARGIN) -> int:
    """The smallest decoded side to ask libjpeg for: `margin` x the largest side any spec
    resizes or crops to, so every resize still shrinks."""
    sides = [s.resize if isinstance(s.resize, int) else max(s.resize) for s in specs]
    crops = [max(s.crop) for s in specs if s.crop is not None]
    return math.ceil(margin * max(sides + crops))


def shortest_edge_size(height: int, width: int, shortest: int) -> tuple[int, int]:
    """Output (height, width) of a shortest-edge resize, Hugging Face's rule (int truncation)."""
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest * long / short)
    return (new_long, shortest) if width <= height else (shortest, new_long)


def resize_target(spec: ImagePreprocessSpec, height: int, width: int) -> tuple[int, int]:
    if spec.resize_mode == "exact":
        assert not isinstance(spec.resize, int)
        return spec.resize
    assert isinstance(spec.resize, int)
    return shortest_edge_size(height, width, spec.resize)


def center_crop(pixels: np.ndarray, size: tuple[int, int], rounding: CropRounding) -> np.ndarray:
    """Centre crop of an HWC array, zero-padding when the image is smaller (as HF does)."""
    crop_h, crop_w = size
    height, width = pixels.shape[:2]
    if height < crop_h or width < crop_w:
        padded = np.zeros((max(height, crop_h), max(width, crop_w), 3), dtype=pixels.dtype)
        top, left = (padded.shape[0] - height) // 2, (padded.shape[1] - width) // 2
        padded[top : top + height, left : left + width] = pixels
        pixels, (height, width) = padded, padded.shape[:2]
    if rounding == "floor":
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
    else:
        top, left = round((height - crop_h) / 2.0), round((width - crop_w) / 2.0)
    return pixels[top : top + crop_h, left : left + crop_w]


def preprocess_image(image: Image.Image, spec: ImagePreprocessSpec) -> np.ndarray:
    """Decoded RGB image -> uint8 (H, W, 3) pixels at the graph's input size."""
    (full_width, full_height), box = draft_geometry(image)
    height, width = resize_target(spec, full_height, full_width)
    if box is not None or (height, width) != (image.height, image.width):
        image = image.resize((width, height), PIL_RESAMPLE[spec.interpolation], box=box)
    pixels = np.asarray(image, dtype=np.uint8)
    if spec.crop is not None:
        pixels = center_crop(pixels, spec.crop, spec.crop_rounding)
    return np.ascontiguousarray(pixels)


def normalize_pixels(pixels: np.ndarray, spec: ImagePreprocessSpec) -> np.ndarray:
    """The in-graph normalisation done in numpy: (N, H, W, 3) uint8 -> (N, 3, H, W) float32.

    Used for golden tests and by runtimes that take normalised input; the division matches the
    graph (`x / 255` is correctly rounded, like HF's float64 rescale cast to float32).
    """
    x = pixels.astype(np.float32) / np.float32(1 / spec.rescale_factor)
    if spec.normalization == "minmax":
        low = x.min(axis=(1, 2, 3), keepdims=True)
        high = x.max(axis=(1, 2, 3), keepdims=True)
        return np.ascontiguousarray(((x - low) / (high - low)).transpose(0, 3, 1, 2))
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2))


def is_integral_reciprocal(value: float) -> bool:
    return math.isclose(1 / value, round(1 / value), rel_tol=0, abs_tol=1e-9)
