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

from ducho_fast.artifact.manifest import MANIFEST_NAME, Manifest, read_manifest
from ducho_fast.core.errors import ConfigError
from ducho_fast.modalities import Feed, modality
from ducho_fast.models.spec import ModelRef
from ducho_fast.resolve import OpenModel, artifact_folder, artifact_for, is_artifact, open_artifact
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
        """(N, D) features, one row per payload, in input order ((0, D) for no payloads)."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1 (got {batch_size})")
        name = self.output_name(kind, output)
        payloads = list(payloads)
        if not payloads:
            return self.empty(kind, name)
        feed, session = self.feed(kind), self.session(kind)
        result: np.ndarray | None = None
        for positions, inputs in modality(kind).encode_batches(feed, payloads, batch_size):
            values = session.run(inputs)[name]
            if result is None:
                result = np.empty((len(payloads), *values.shape[1:]), dtype=values.dtype)
            result[positions] = values
        assert result is not None
        return result

    def outputs(self, kind: str) -> list[str]:
        """The output names of the `kind` graph (the first is the default)."""
        return [o.name for o in self.manifest.graph(kind).outputs]

    def output_name(self, kind: str, output: str | None) -> str:
        names = self.outputs(kind)
        if output is None:
            return names[0]
        if output not in names:
            raise ConfigError(f"the {kind} graph has no output {output!r}; its outputs: {names}")
        return output

    def empty(self, kind: str, name: str) -> np.ndarray:
        """(0, D...) with the output's manifest shape and dtype (no session is opened)."""
        info = next(o for o in self.manifest.graph(kind).outputs if o.name == name)
        tail = [d if isinstance(d, int) else 0 for d in info.shape[1:]]
        return np.empty((0, *tail), dtype=np.dtype(info.dtype))

    def encode_images(
        self,
        images: ImageInput | Sequence[ImageInput],
        batch_size: int = 32,
        output: str | None = None,
    ) -> np.ndarray:
        """(N, D) float32 features, one row per image, in input order; one path or image
        gives one row."""
        if isinstance(images, str | Path | Image.Image):
            images = [images]
        return self.encode("image", images, batch_size, output)

    def encode_texts(
        self, texts: str | Sequence[str], batch_size: int = 64, output: str | None = None
    ) -> np.ndarray:
        """(N, D) float32 features in input order; a single string is one text (one row).
        Batches are length-sorted internally."""
        if isinstance(texts, str):
            texts = [texts]
        return self.encode("text", texts, batch_size, output)

    def encode_audio(
        self, clips: Any, batch_size: int = 16, output: str | None = None
    ) -> np.ndarray:
        """(N, D) float32 features, one row per clip (a file path, or a mono float waveform
        at the model's sampling rate), in input order; one path or 1-D array is one row.
        Long clips are windowed and pooled as `extract` does. An artifact exported with
        `pooling="none"` gives an object array of one `(T, D)` frame sequence per clip."""
        if isinstance(clips, str | Path) or (isinstance(clips, np.ndarray) and clips.ndim == 1):
            clips = [clips]
        return self.encode("audio", clips, batch_size, output)


def load(artifact_dir: str | Path, choice: RuntimeChoice | None = None) -> Encoder:
    """Open a validated artifact (by default on ONNX Runtime at the artifact's precision);
    refuses a folder whose files changed since export.

    Anything else `extract` accepts as a model (a model folder, a hub id, a torchvision
    name) is exported first, as `extract` does on the fly: validated, cached by fingerprint
    in the cache folder, with its progress logged (`ducho_fast` logger)."""
    source = Path(artifact_dir)
    if not is_artifact(str(source)):
        source = export_on_the_fly(str(artifact_dir), choice)
    manifest = read_manifest(source)
    choice = choice or RuntimeChoice("onnxruntime", manifest.precision)  # what it was made for
    if not choice.spec.needs_artifact:
        raise ConfigError(f"load() runs an exported artifact; {choice.runtime} runs eager models")
    return Encoder(source, manifest, choice)


def export_on_the_fly(model: str, choice: RuntimeChoice | None) -> Path:
    """The cached export of `model` (made now if missing), as `extract` makes it."""
    from ducho_fast.core import log

    log.console()
    choice = choice or RuntimeChoice("onnxruntime", "fp32")
    if not choice.spec.needs_artifact:
        raise ConfigError(f"load() runs an exported artifact; {choice.runtime} runs eager models")
    found = artifact_folder(ModelRef(model), choice)
    if not (found / MANIFEST_NAME).is_file():
        log.get("export").info(
            "%s is not an exported artifact: exporting it as extract does (cached in %s; "
            "`ducho-fast export %s -o DIR` makes one you can keep)",
            model,
            found.parent,
            model,
        )
    return artifact_for(ModelRef(model), choice)
