"""`load(artifact_dir)`: an encoder over a validated artifact, for Python users.

It uses the same decoding, preprocessing and tokenisation as the extractor (the modality
table), driven entirely by the manifest, on any artifact runtime of the runtime table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ducho_fast.artifact.manifest import Manifest, read_manifest
from ducho_fast.core.errors import ConfigError
from ducho_fast.modalities import Feed, modality
from ducho_fast.resolve import OpenModel, open_artifact
from ducho_fast.runtime.base import Session
from ducho_fast.runtime.table import RuntimeChoice

ImageInput = str | Path | Image.Image


class Encoder:
    """Encodes items of each modality the artifact has (ONNX Runtime on the CPU by default)."""

    def __init__(self, folder: Path, manifest: Manifest, choice: RuntimeChoice):
        self.folder = folder
        self.manifest = manifest
        self.choice = choice
        self._opened: dict[str, OpenModel] = {}

    def opened(self, graph: str) -> OpenModel:
        """The graph opened as extraction opens it: precision checked, gated where the runtime
        reduces precision itself."""
        if graph not in self._opened:
            self.manifest.graph(graph)  # an unknown graph names the known ones
            self._opened[graph] = open_artifact(self.folder, graph, self.choice)
        return self._opened[graph]

    def session(self, graph: str) -> Session:
        return self.opened(graph).session

    def feed(self, graph: str) -> Feed:
        return self.opened(graph).feed

    def encode(
        self, kind: str, payloads: Sequence[Any], batch_size: int, output: str | None = None
    ) -> np.ndarray:
        """(N, D) features, one row per payload, in input order."""
        feed, session = self.feed(kind), self.session(kind)
        name = output or session.output_names[0]
        result: np.ndarray | None = None
        for positions, inputs in modality(kind).encode_batches(feed, payloads, batch_size):
            values = session.run(inputs)[name]
            if result is None:
                result = np.empty((len(payloads), *values.shape[1:]), dtype=values.dtype)
            result[positions] = values
        return result if result is not None else np.empty((0, 0), dtype=np.float32)

    def encode_images(
        self, images: Sequence[ImageInput], batch_size: int = 32, output: str | None = None
    ) -> np.ndarray:
        """(N, D) float32 features, one row per image, in input order."""
        return self.encode("image", images, batch_size, output)

    def encode_texts(
        self, texts: Sequence[str], batch_size: int = 64, output: str | None = None
    ) -> np.ndarray:
        """(N, D) float32 features in input order; batches are length-sorted internally."""
        return self.encode("text", texts, batch_size, output)


def load(artifact_dir: str | Path, choice: RuntimeChoice | None = None) -> Encoder:
    """Open a validated artifact (by default on ONNX Runtime at the artifact's precision);
    refuses a folder whose files changed since export."""
    folder = Path(artifact_dir)
    manifest = read_manifest(folder)
    choice = choice or RuntimeChoice("onnxruntime", manifest.precision)  # what it was made for
    if not choice.spec.needs_artifact:
        raise ConfigError(f"load() runs an exported artifact; {choice.runtime} runs eager models")
    return Encoder(folder, manifest, choice)
