"""The image modality: files decoded and preprocessed to uint8 pixels in worker processes.

Geometry (decode, EXIF orientation, RGB, resize, crop) runs on the CPU; rescale and mean/std
live in the graph, so batches travel as compact `uint8 (N, H, W, 3)` arrays named `pixels`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ducho_fast.core.image import ImagePreprocessSpec, decode_image, draft_side, preprocess_image
from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Batch, Blob, Item, Shard
from ducho_fast.modalities.base import BATCH_SIZES, Feed, Inputs, MakeInputs, Sample
from ducho_fast.modalities.blobs import decode_blob
from ducho_fast.modalities.files import (
    FileDataset,
    collate_files,
    within,
    worker_batches,
)

SAMPLE_IMAGES = 32


class ImageDataset(FileDataset):
    """Decode once, preprocess per distinct spec."""

    def __init__(
        self,
        items: Sequence[Item],
        specs: Mapping[str, ImagePreprocessSpec],
        timeout_s: float,
        draft_margin: float | None = None,
    ):
        super().__init__(items, timeout_s)
        self.specs = dict(specs)
        self.draft_side = (
            draft_side(self.specs.values(), draft_margin) if draft_margin and specs else None
        )

    def read(self, item: Item) -> Image.Image:
        return decode_source(image_source(item), self.draft_side)

    def prepare(self, decoded: Image.Image) -> dict[str, np.ndarray]:
        return {key: preprocess_image(decoded, spec) for key, spec in self.specs.items()}


def stack_pixels(arrays: list[np.ndarray]) -> Inputs:
    return {"pixels": np.stack(arrays)}


collate_images = partial(collate_files, combine=stack_pixels)


def image_batches(
    items: Sequence[Item],
    specs: Mapping[str, ImagePreprocessSpec],
    shards: Sequence[Shard],
    options: PipelineOptions,
    timer: StageTimer,
) -> Iterator[Batch]:
    """Batches of uint8 pixels, decoded by worker processes (or inline), in order."""
    margin = options.draft_margin if options.jpeg_draft else None
    dataset = ImageDataset(items, specs, options.item_timeout_s, margin)
    return worker_batches(dataset, collate_images, shards, options, timer)


def synthetic_images(count: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Deterministic photo-like uint8 images: smooth colour fields plus fine noise."""
    rng = np.random.default_rng(seed)
    height, width = size
    images = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
        noise = rng.normal(0, 12, (height, width, 3))
        images.append(np.clip(smooth + noise, 0, 255).astype(np.uint8))
    return np.stack(images)


def image_source(item: Item) -> str | Blob:
    """Where an item's encoded image is: its table cell (modalities/blobs.py), else its file."""
    return item.blob if item.blob is not None else item.path


def decode_source(source: str | Path | Blob, draft_side: int | None = None) -> Image.Image:
    """A file's or a table cell's image, decoded the same way (draft geometry included)."""
    if isinstance(source, Blob):
        return decode_blob(source, draft_side)
    return decode_image(source, draft_side)


def real_images(
    sources: Sequence[Path | Blob], spec: ImagePreprocessSpec, count: int
) -> np.ndarray:
    pixels = [preprocess_image(decode_source(s), spec) for s in sources]
    return np.stack([pixels[i % len(pixels)] for i in range(count)])


def image_inputs(spec: ImagePreprocessSpec) -> MakeInputs:
    """Noise photos through the model's own preprocessing (compute does not depend on pixels)."""
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    pixels = preprocess_image(Image.fromarray(noise), spec)
    return lambda size: {"pixels": np.repeat(pixels[None], size, axis=0)}


def spec_key(spec: ImagePreprocessSpec) -> str:
    text = json.dumps(spec.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ImageModality:
    name = "image"
    input_names = ("pixels",)
    starts_early = True
    holds_out_sample = True

    def input_axes(self) -> dict[str, dict[int, str]]:
        return {"pixels": {0: "batch"}}

    def spec_from_dict(self, data: Mapping[str, Any]) -> ImagePreprocessSpec:
        return ImagePreprocessSpec.from_dict(dict(data))

    def example_inputs(self, tower: Any) -> Inputs:
        rng = np.random.default_rng(0)
        height, width = tower.preprocess.input_size
        return {"pixels": rng.integers(0, 256, (2, height, width, 3), dtype=np.uint8)}

    def validation_cases(self, tower: Any, sample: Sample) -> list[tuple[str, Inputs]]:
        """Every batch size, on the user's images when given (else photo-like noise)."""
        spec: ImagePreprocessSpec = tower.preprocess
        images = sample.images
        cases = []
        for batch in BATCH_SIZES:
            pixels = (
                real_images(images, spec, batch)
                if images
                else synthetic_images(batch, spec.input_size, seed=batch)
            )
            source = ",sample images" if images else ""
            cases.append((f"batch={batch}{source}", {"pixels": pixels}))
        return cases

    def artifact_cases(self, feed: Feed, sample: Sample) -> list[tuple[str, Inputs]]:
        spec: ImagePreprocessSpec = feed.prepare
        cases = []
        for batch in BATCH_SIZES:
            pixels = (
                real_images(sample.images, spec, batch)
                if sample.images
                else synthetic_images(batch, spec.input_size, seed=batch)
            )
            cases.append((f"batch={batch}", {"pixels": pixels}))
        return cases

    def calibration_batches(self, tower: Any, sample: Sample) -> list[Inputs]:
        if not sample.images:
            return []
        spec = tower.preprocess
        pixels = np.stack([preprocess_image(decode_source(s), spec) for s in sample.images])
        return [{"pixels": pixels[i : i + 8]} for i in range(0, len(pixels), 8)]

    def save_processor(self, tower: Any, folder: Path) -> str | None:
        return None  # the preprocessing spec in the manifest is all an image graph needs

    def eager_feed(self, tower: Any, key: str) -> Feed:
        return Feed(key, tower.preprocess)

    def artifact_feed(self, folder: Path, processor_dir: str | None, spec: Any, key: str) -> Feed:
        return Feed(key, spec)

    def feed_key(self, spec: Any, index: int) -> str:
        return spec_key(spec)

    def wrap_session(self, session: Any, feed: Feed) -> Any:
        return session

    def export_sample(self, items: Sequence[Item], timeout_s: float = 60.0) -> Sample:
        """An even spread of the pass's images (files or table cells); those that do not
        decode (in `timeout_s`) are left out (the run records them)."""
        usable: list[Path | Blob] = []
        for item in items[:: max(len(items) // SAMPLE_IMAGES, 1)][:SAMPLE_IMAGES]:
            source = image_source(item)
            try:
                within(timeout_s, partial(decode_source, source))
            except Exception:  # any image that does not decode is just left out of the sample
                continue
            usable.append(Path(source) if isinstance(source, str) else source)
        return Sample(images=tuple(usable))

    def sweep_inputs(self, feed: Feed, items: Sequence[Item]) -> MakeInputs:
        return image_inputs(feed.prepare)

    def batches(
        self,
        items: Sequence[Item],
        feeds: Mapping[str, Feed],
        shards: Sequence[Shard],
        options: PipelineOptions,
        timer: StageTimer,
    ) -> Iterator[Batch]:
        specs = {key: feed.prepare for key, feed in feeds.items()}
        return image_batches(items, specs, shards, options, timer)

    def encode_batches(
        self, feed: Feed, payloads: Sequence[Any], batch_size: int
    ) -> Iterator[tuple[np.ndarray, Inputs]]:
        for start in range(0, len(payloads), batch_size):
            chunk = payloads[start : start + batch_size]
            pixels = np.stack(
                [preprocess_image(decode_image(item), feed.prepare) for item in chunk]
            )
            yield np.arange(start, start + len(chunk)), {"pixels": pixels}
