"""The text modality: rows of a table tokenised in the reader thread, batched by length.

Tokenisation uses the artifact's `tokenizer.json` through the `tokenizers` library (no torch
import); batches are windows of similar length padded to their longest item, so a batch of
short titles costs what short titles cost, not the model's maximum length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ducho_fast.core.batching import pad_batch, text_batches
from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Batch, Item, Shard
from ducho_fast.core.tokenize import LoadedTokenizer, load_tokenizer, wrap_transformers_tokenizer
from ducho_fast.modalities.base import BATCH_SIZES, Feed, Inputs, MakeInputs, Sample

SAMPLE_TEXTS = 64


@dataclass(frozen=True)
class TextEncoding:
    """How one text model tokenizes: `tokenize(texts) -> ids`, padding id, fixed length."""

    key: str
    tokenize: Callable[[list[str]], list[list[int]]]
    pad_id: int
    pad_to: int | None


def text_batch_stream(
    items: Sequence[Item],
    encoding: TextEncoding,
    shards: Sequence[Shard],
    batch_size: int,
    timer: StageTimer,
) -> Iterator[Batch]:
    """Per shard: tokenize, sort by length, pad each batch to its longest item."""
    for shard in shards:
        with timer.stage("preprocess"):
            ids = encoding.tokenize([items[p].text or "" for p in shard.positions])
            batches = list(text_batches(ids, encoding.pad_id, batch_size, encoding.pad_to))
        for n, batch in enumerate(batches):
            positions = [shard.positions[i] for i in batch.positions]
            yield Batch(
                shard.index, positions, {encoding.key: batch.inputs}, [], n == len(batches) - 1
            )
        if not batches:
            yield Batch(shard.index, [], {}, [], True)


WORDS_TEXT = (
    "soft cotton jersey top with a round neckline and short sleeves slim fit trousers in "
    "woven fabric with a high waist zip fly and side pockets knitted jumper in a wool blend "
    "sneakers with padded edges lace up front and a rubber sole long dress in airy chiffon"
)


WORDS = tuple(WORDS_TEXT.split())


def synthetic_texts(count: int, seed: int = 0) -> list[str]:
    """Texts whose lengths run from one word to well past typical max lengths."""
    rng = np.random.default_rng(seed)
    lengths = (1, 3, 6, 11, 19, 33, 70, 140, 300)
    return [" ".join(rng.choice(WORDS, size=lengths[i % len(lengths)])) for i in range(count)]


def sequence_lengths(max_length: int) -> tuple[int, ...]:
    return tuple(sorted({min(7, max_length), min(29, max_length), max_length}))


def text_inputs(encoding: TextEncoding, texts: Sequence[str]) -> MakeInputs:
    """Batches like the run's own: the pass's texts (a spread of up to 256) sorted by length,
    each batch a window of neighbours around the median length, padded to its longest."""
    spread = list(texts[:: max(len(texts) // 256, 1)][:256]) or ["a product description"]
    ids = sorted(encoding.tokenize(spread), key=len)

    def make(size: int) -> dict[str, np.ndarray]:
        start = max(len(ids) // 2 - size // 2, 0)
        chosen = [ids[(start + i) % len(ids)] for i in range(size)]
        return pad_batch(chosen, encoding.pad_id, encoding.pad_to)

    return make


Padding = Literal["longest", "max_length"]


@dataclass(frozen=True)
class TextPreprocessSpec:
    """Tokenisation rule; the tokenizer files themselves travel in the artifact folder."""

    max_length: int
    padding: Padding = "longest"

    def to_dict(self) -> dict:
        return {"max_length": self.max_length, "padding": self.padding, "truncation": True}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextPreprocessSpec:
        return cls(int(data["max_length"]), data.get("padding", "longest"))


def text_encoding(key: str, loaded: LoadedTokenizer, spec: TextPreprocessSpec) -> TextEncoding:
    pad_to = spec.max_length if spec.padding == "max_length" else None
    return TextEncoding(key, loaded.tokenize, loaded.pad_id, pad_to)


def tokenize_fixed(tokenizer: Any, texts: Sequence[str], length: int, padding: str) -> Inputs:
    """A transformers tokenizer's int64 ids and mask (export tracing, validation, calibration)."""
    encoded = tokenizer(
        list(texts), padding=padding, truncation=True, max_length=length, return_tensors="np"
    )
    return {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}


class TextModality:
    name = "text"
    input_names = ("input_ids", "attention_mask")
    starts_early = False
    holds_out_sample = False

    def input_axes(self) -> dict[str, dict[int, str]]:
        return {name: {0: "batch", 1: "sequence"} for name in self.input_names}

    def spec_from_dict(self, data: Mapping[str, Any]) -> TextPreprocessSpec:
        return TextPreprocessSpec.from_dict(data)

    def example_inputs(self, tower: Any, batch: int = 2, seq_len: int = 8) -> Inputs:
        rng = np.random.default_rng(0)
        vocab = max(int(getattr(tower.processor, "vocab_size", 100)), 10)
        ids = rng.integers(1, vocab - 1, (batch, seq_len), dtype=np.int64)
        mask = np.ones((batch, seq_len), dtype=np.int64)
        mask[-1, seq_len // 2 :] = 0
        return {"input_ids": ids, "attention_mask": mask}

    def validation_cases(self, tower: Any, sample: Sample) -> list[tuple[str, Inputs]]:
        """Every batch size at three sequence lengths up to the tokenizer's maximum."""
        cases = []
        for length in sequence_lengths(tower.preprocess.max_length):
            for batch in BATCH_SIZES:
                texts = synthetic_texts(batch, seed=length)
                inputs = tokenize_fixed(tower.processor, texts, length, "max_length")
                cases.append((f"batch={batch},seq={length}", inputs))
        return cases

    def artifact_cases(self, feed: Feed, sample: Sample) -> list[tuple[str, Inputs]]:
        """Synthetic texts from one word to past the maximum length (and the sample's),
        tokenised and padded as a run pads them."""
        encoding: TextEncoding = feed.prepare
        cases = []
        for batch in BATCH_SIZES:
            texts = synthetic_texts(batch, seed=batch) + list(sample.texts[:batch])
            ids = encoding.tokenize(texts)
            cases.append((f"batch={len(texts)}", pad_batch(ids, encoding.pad_id, encoding.pad_to)))
        return cases

    def calibration_batches(self, tower: Any, sample: Sample) -> list[Inputs]:
        texts = list(sample.texts)
        length = tower.preprocess.max_length
        return [
            tokenize_fixed(tower.processor, texts[i : i + 8], length, "longest")
            for i in range(0, len(texts), 8)
        ]

    def save_processor(self, tower: Any, folder: Path) -> str | None:
        if tower.processor is None:
            return None
        tower.processor.save_pretrained(folder / "tokenizer")
        return "tokenizer"

    def eager_feed(self, tower: Any, key: str) -> Feed:
        loaded = wrap_transformers_tokenizer(tower.processor, tower.preprocess.max_length)
        return Feed(key, text_encoding(key, loaded, tower.preprocess))

    def artifact_feed(self, folder: Path, processor_dir: str | None, spec: Any, key: str) -> Feed:
        if processor_dir is None:
            from ducho_fast.core.errors import ArtifactError

            raise ArtifactError(f"{folder} has a text graph but no tokenizer")
        loaded = load_tokenizer(folder / processor_dir, spec.max_length)
        return Feed(key, text_encoding(key, loaded, spec))

    def feed_key(self, spec: Any, index: int) -> str:
        return f"m{index}"  # each text model tokenises and length-sorts on its own

    def wrap_session(self, session: Any, feed: Feed) -> Any:
        return session

    def export_sample(self, items: Sequence[Item], timeout_s: float = 60.0) -> Sample:
        spread = items[:: max(len(items) // SAMPLE_TEXTS, 1)]
        return Sample(texts=tuple(i.text for i in spread if i.text)[:SAMPLE_TEXTS])

    def sweep_inputs(self, feed: Feed, items: Sequence[Item]) -> MakeInputs:
        return text_inputs(feed.prepare, [i.text or "" for i in items])

    def batches(
        self,
        items: Sequence[Item],
        feeds: Mapping[str, Feed],
        shards: Sequence[Shard],
        options: PipelineOptions,
        timer: StageTimer,
    ) -> Iterator[Batch]:
        if len(feeds) != 1:
            from ducho_fast.core.errors import ConfigError

            raise ConfigError("a text pass runs exactly one text model (one per tokenizer)")
        (feed,) = feeds.values()
        return text_batch_stream(items, feed.prepare, shards, options.batch_size, timer)

    def encode_batches(
        self, feed: Feed, payloads: Sequence[Any], batch_size: int
    ) -> Iterator[tuple[np.ndarray, Inputs]]:
        encoding: TextEncoding = feed.prepare
        ids = encoding.tokenize(list(payloads))
        for batch in text_batches(ids, encoding.pad_id, batch_size, encoding.pad_to):
            yield batch.positions, batch.inputs
