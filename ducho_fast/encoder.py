"""`load(artifact_dir)`: an encoder over a validated artifact, for Python users.

It uses the same decoding, preprocessing and tokenisation as the extractor, driven entirely
by the manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ducho_fast.artifact.manifest import Manifest, read_manifest
from ducho_fast.core.batching import text_batches
from ducho_fast.core.errors import ArtifactError
from ducho_fast.core.image import ImagePreprocessSpec, decode_image, preprocess_image
from ducho_fast.runtime.onnxruntime import OrtOptions, OrtSession

ImageInput = str | Path | Image.Image


class Tokenizer:
    """The artifact's tokenizer with the manifest's truncation and padding rule."""

    def __init__(self, folder: Path, text_preprocess: dict):
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(folder)
        self.max_length = int(text_preprocess["max_length"])
        self.pad_to = self.max_length if text_preprocess["padding"] == "max_length" else None
        pad_id = self._tokenizer.pad_token_id
        self.pad_id = int(pad_id if pad_id is not None else 0)

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        encoded = self._tokenizer(
            list(texts), truncation=True, max_length=self.max_length, padding=False
        )
        return encoded["input_ids"]


class Encoder:
    """Encodes images and texts with an exported artifact (ONNX Runtime on the CPU here)."""

    def __init__(self, folder: Path, manifest: Manifest, options: OrtOptions):
        self.folder = folder
        self.manifest = manifest
        self.options = options
        self._sessions: dict[str, OrtSession] = {}
        self._tokenizer: Tokenizer | None = None

    def session(self, graph: str) -> OrtSession:
        if graph not in self._sessions:
            info = self.manifest.graph(graph)
            self._sessions[graph] = OrtSession(self.folder / info.file, self.options)
        return self._sessions[graph]

    @property
    def image_spec(self) -> ImagePreprocessSpec:
        preprocess = self.manifest.graph("image").image_preprocess
        assert preprocess is not None
        return ImagePreprocessSpec.from_dict(preprocess)

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            if self.manifest.tokenizer_dir is None:
                raise ArtifactError(f"{self.folder} has no tokenizer")
            preprocess = self.manifest.graph("text").text_preprocess
            assert preprocess is not None
            self._tokenizer = Tokenizer(self.folder / self.manifest.tokenizer_dir, preprocess)
        return self._tokenizer

    def encode_images(
        self, images: Sequence[ImageInput], batch_size: int = 32, output: str | None = None
    ) -> np.ndarray:
        """(N, D) float32 features, one row per image, in input order."""
        spec = self.image_spec
        session = self.session("image")
        name = output or session.output_names[0]
        rows = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            pixels = np.stack([preprocess_image(decode_image(item), spec) for item in chunk])
            rows.append(session.run({"pixels": pixels})[name])
        return _concat(rows, session, name)

    def encode_texts(
        self, texts: Sequence[str], batch_size: int = 64, output: str | None = None
    ) -> np.ndarray:
        """(N, D) float32 features in input order; batches are length-sorted internally."""
        tokenizer = self.tokenizer
        session = self.session("text")
        name = output or session.output_names[0]
        ids = tokenizer.ids(texts)
        result: np.ndarray | None = None
        for batch in text_batches(ids, tokenizer.pad_id, batch_size, tokenizer.pad_to):
            values = session.run(batch.inputs)[name]
            if result is None:
                result = np.empty((len(texts), values.shape[1]), dtype=values.dtype)
            result[batch.positions] = values
        return result if result is not None else np.empty((0, 0), dtype=np.float32)


def _concat(rows: list[np.ndarray], session: OrtSession, name: str) -> np.ndarray:
    if rows:
        return np.concatenate(rows, axis=0)
    return np.empty((0, 0), dtype=np.float32)


def load(artifact_dir: str | Path, options: OrtOptions | None = None) -> Encoder:
    """Open a validated artifact; refuses a folder whose files changed since export."""
    folder = Path(artifact_dir)
    manifest = read_manifest(folder)
    return Encoder(folder, manifest, options or OrtOptions())
