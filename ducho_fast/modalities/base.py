"""The Modality seam: everything that differs between images, texts and audio.

A modality says what its graphs take as input, how a tower is traced and validated, how the
run's items become model input (decoded and preprocessed in workers, or tokenised) and how
those inputs are batched. Export, resolution, the engine, the encoder and the bench only ask
the table, so a new modality is one module plus one `register` call in `modalities/__init__`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Batch, Blob, Item, Shard
from ducho_fast.core.table import Table

Inputs = dict[str, np.ndarray]
# Export validation batch sizes: 1, a small odd one, and one past a power of two.
BATCH_SIZES = (1, 3, 17)
MakeInputs = Callable[[int], Inputs]


@dataclass(frozen=True)
class Sample:
    """User data for validation and int8 calibration, by modality (image files, texts...).

    `images` and `texts` are keywords for the two built-in modalities; any other modality's
    items go in `other` as `(modality name, items)` pairs.
    """

    images: tuple[Path | Blob, ...] = ()  # files, or cells of a Parquet image table
    texts: tuple[str, ...] = ()
    other: tuple[tuple[str, tuple[Any, ...]], ...] = field(default=())

    def get(self, modality: str) -> tuple[Any, ...]:
        if modality == "image":
            return self.images
        if modality == "text":
            return self.texts
        return dict(self.other).get(modality, ())

    def with_items(self, modality: str, items: Sequence[Any]) -> Sample:
        if modality == "image":
            return Sample(tuple(items), self.texts, self.other)
        if modality == "text":
            return Sample(self.images, tuple(items), self.other)
        others = {**dict(self.other), modality: tuple(items)}
        return Sample(self.images, self.texts, tuple(others.items()))

    def __bool__(self) -> bool:
        return bool(self.images or self.texts or any(items for _, items in self.other))


@dataclass(frozen=True)
class Feed:
    """How one opened model's inputs are made from items: the modality's preprocessing
    (an image spec, a tokenizer) and the key under which a batch carries them. Models whose
    feeds share a key share one decode and one preprocessed array."""

    key: str
    prepare: Any


class Modality(Protocol):
    """One kind of input. `name` is the tower, graph and manifest key ("image", "text")."""

    name: str
    input_names: tuple[str, ...]
    # Decoding can start before the models open when the artifact's manifest already says
    # how (images: the preprocessing spec); text tokenises in milliseconds, so it does not.
    starts_early: bool
    # The export gates int8 on held-out sample items the calibration never saw (images); a
    # modality whose validation inputs are synthetic calibrates on the whole sample (text).
    holds_out_sample: bool

    def input_axes(self) -> dict[str, dict[int, str]]:
        """Dynamic axes of each graph input (batch, sequence, time...)."""
        ...

    def spec_from_dict(self, data: Mapping[str, Any]) -> Any:
        """The preprocessing spec recorded in a manifest, as the object the tower carries."""
        ...

    def example_inputs(self, tower: Any) -> Inputs:
        """Small deterministic inputs used only to trace the graph."""
        ...

    def validation_cases(self, tower: Any, sample: Sample) -> list[tuple[str, Inputs]]:
        """Named input sets the export is checked on against eager (several shapes)."""
        ...

    def artifact_cases(self, feed: Feed, sample: Sample) -> list[tuple[str, Inputs]]:
        """Like `validation_cases`, from an artifact's feed alone (no eager model): inputs for
        gating a precision a runtime reaches by itself (OpenVINO bf16) against fp32."""
        ...

    def calibration_batches(self, tower: Any, sample: Sample) -> list[Inputs]:
        """Static int8 calibration inputs from the user's items, or none."""
        ...

    def save_processor(self, tower: Any, folder: Path) -> str | None:
        """Write what turns raw items into inputs (a tokenizer...) into the artifact."""
        ...

    def eager_feed(self, tower: Any, key: str) -> Feed:
        """The feed of a tower run eagerly (its own tokenizer or spec)."""
        ...

    def artifact_feed(self, folder: Path, processor_dir: str | None, spec: Any, key: str) -> Feed:
        """The feed of an exported graph, from the artifact's files and manifest alone."""
        ...

    def feed_key(self, spec: Any, index: int) -> str:
        """Models with equal keys in one pass share preprocessing (images of one size)."""
        ...

    def wrap_session(self, session: Any, feed: Feed) -> Any:
        """The session the engine runs: the graph's own, or one that adapts the modality's
        batches to it (audio: clips cut into windows, pooled back per clip)."""
        ...

    def export_sample(self, items: Sequence[Item], timeout_s: float = 60.0) -> Sample:
        """A spread of the run's own items for validating (and calibrating) an export; an
        item that takes longer than `timeout_s` to read is left out."""
        ...

    def sweep_inputs(self, feed: Feed, items: Sequence[Item]) -> MakeInputs:
        """Batches like the run's, for timing batch sizes."""
        ...

    def batches(
        self,
        items: Sequence[Item],
        feeds: Mapping[str, Feed],
        shards: Sequence[Shard],
        options: PipelineOptions,
        timer: StageTimer,
    ) -> Iterator[Batch]:
        """The pass's batches in shard order, each carrying `{feed key: inputs}`."""
        ...

    def encode_batches(
        self, feed: Feed, payloads: Sequence[Any], batch_size: int
    ) -> Iterator[tuple[np.ndarray, Inputs]]:
        """In-memory batching for the Python API and the bench: (positions, inputs)."""
        ...


MODALITIES: Table[Modality] = Table("modality", "ducho_fast.modalities")
register = MODALITIES.register


def modality(name: str) -> Modality:
    """The registered modality `name`; an unknown one names the known ones."""
    return MODALITIES.lookup(name)
