"""A fidelity gate for `--jpeg-draft`, like reduced precision's: measured, then kept or dropped.

libjpeg's reduced-size decoding (1/2, 1/4, 1/8) is a poor low-pass filter: fine periodic
patterns (a pin-striped shirt) alias into moire that the later antialiased resize keeps, and
texture-sensitive CNNs see it. On the 100 H&M photos, EfficientNet-Lite0 (real weights) keeps
a median cosine of 0.997 to exact decoding but falls to 0.80 on one striped shirt, while CLIP
ViT-B/32 kept 0.9994 everywhere (benchmarks/README.md). So whether draft is safe depends on the
model, and is measured: on a spread of the run's own large JPEGs, each model computes features
through its own session from exact and from draft decoding at each margin of `DRAFT_MARGINS`
(decoded side >= margin x the model's input side); the smallest margin whose min cosine reaches
the floor is used, and if none does the pass decodes exactly. The figures are remembered per
model, runtime, precision, preprocessing and CPU (like the batch sweep), so only the first run
pays for them; the floor is applied on each run, so a stricter floor needs no new measurement.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ducho_fast.core.blobs import blob_bytes
from ducho_fast.core.cache import Remembered
from ducho_fast.core.errors import ExtractionError
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.core.image import (
    ImagePreprocessSpec,
    draft_side,
    preprocess_image,
    require_regular_file,
)
from ducho_fast.core.machine import machine_key
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Blob, Item
from ducho_fast.modalities.files import within
from ducho_fast.modalities.image import decode_source, image_source
from ducho_fast.runtime.base import Session

DRAFT_MARGINS = (1.0, 2.0)  # H&M photos: 1 decodes at 1/4 (3.9x exact's rate), 2 at 1/2 (2.2x)
GATE_IMAGES = 32
PROBED = 4 * GATE_IMAGES  # headers read at most to find that many large JPEGs
BATCH = 8
CACHE_FILE = "draft-gates.json"


@dataclass(frozen=True)
class DraftGate:
    """One model's measured min cosine (draft vs exact decoding) at each margin."""

    model: str
    cosines: dict[float, float]
    images: int
    cached: bool = False

    def margin(self, floor: float) -> float | None:
        """The smallest margin that reaches `floor`; None: draft is off for this model."""
        return next((m for m, cos in sorted(self.cosines.items()) if cos >= floor), None)

    def describe(self, floor: float) -> str:
        figures = ", ".join(f"margin {m:g}: {c:.5f}" for m, c in sorted(self.cosines.items()))
        how = "remembered" if self.cached else f"{self.images} of the run's JPEGs"
        chosen = self.margin(floor)
        verdict = (
            f"--jpeg-draft kept at margin {chosen:g}"
            if chosen is not None
            else "--jpeg-draft switched OFF: exact decoding is used"
        )
        return f"{self.model}: {verdict} (min cosine to exact, {how}: {figures}; floor {floor:g})"


def gate_key(identity: dict[str, Any], spec: ImagePreprocessSpec) -> str:
    parts = {**identity, "spec": spec.to_dict(), "machine": machine_key(), "margins": DRAFT_MARGINS}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


class DraftGateCache(Remembered):
    """Measured gates in one JSON file under the cache folder."""

    def __init__(self, cache_dir: Path):
        super().__init__(cache_dir / CACHE_FILE)

    def get(self, key: str, model: str) -> DraftGate | None:
        entry = self.entry(key)
        if entry is None:
            return None
        cosines = {float(m): float(cos) for m, cos in entry["cosines"].items()}
        return DraftGate(model, cosines, int(entry["images"]), cached=True)

    def put(self, key: str, gate: DraftGate) -> None:
        cosines = {str(m): c for m, c in gate.cosines.items()}
        self.remember(key, {"cosines": cosines, "images": gate.images})


def gate_sample(items: Sequence[Item], side: int) -> list[str | Blob]:
    """Up to `GATE_IMAGES` JPEGs, spread over the run, that draft decoding at `side` shrinks
    (headers only; files or table cells Pillow does not open are left out: the run records
    them). A table's cell is sampled as its bytes, decoded as the run decodes them."""
    stride = max(len(items) // PROBED, 1)
    sources: list[str | Blob] = []
    for item in items[::stride][:PROBED]:
        source = image_source(item)
        try:
            with open_encoded(source) as image:
                if image.format == "JPEG" and min(image.size) >= 2 * side:
                    sources.append(source)
        except Exception:  # not an image Pillow opens: not in the sample
            continue
    return sources[:: max(len(sources) // GATE_IMAGES, 1)][:GATE_IMAGES]


def open_encoded(source: str | Blob) -> Image.Image:
    """Pillow's lazy open (header only) of a file or a table cell's bytes."""
    if isinstance(source, Blob):
        return Image.open(io.BytesIO(blob_bytes(source)))
    require_regular_file(source)  # a FIFO would block the open
    return Image.open(source)


def features(session: Session, pixels: list[np.ndarray]) -> dict[str, np.ndarray]:
    outputs: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(pixels), BATCH):
        got = session.run({"pixels": np.stack(pixels[start : start + BATCH])})
        for name, value in got.items():
            outputs.setdefault(name, []).append(np.asarray(value, dtype=np.float32))
    return {name: np.concatenate(parts) for name, parts in outputs.items()}


def pixel_sets(
    sources: Sequence[str | Blob],
    spec: ImagePreprocessSpec,
    sides: Sequence[int | None],
    timeout_s: float,
) -> list[list[np.ndarray]]:
    """Each path's pixels decoded at each of `sides` (None: exactly); a file that fails any
    decode is left out of all of them."""
    sets: list[list[np.ndarray]] = [[] for _ in sides]
    for source in sources:
        try:
            row = [
                preprocess_image(within(timeout_s, partial(decode_source, source, s)), spec)
                for s in sides
            ]
        except Exception:  # a file that does not decode is the run's to record, not the gate's
            continue
        for pixels, one in zip(sets, row, strict=True):
            pixels.append(one)
    return sets


def measure(model: GateModel, sources: Sequence[str | Blob], timeout_s: float) -> DraftGate:
    """Min cosine over the sample and every graph output, exact vs draft, at each margin."""
    sides = [None, *(draft_side([model.spec], m) for m in DRAFT_MARGINS)]
    exact, *drafts = pixel_sets(sources, model.spec, sides, timeout_s)
    if not exact:
        return DraftGate(model.label, {}, 0)
    assert model.session is not None
    reference = features(model.session, exact)
    cosines = {}
    for margin, pixels in zip(DRAFT_MARGINS, drafts, strict=True):
        got = features(model.session, pixels)
        worst = min(float(row_cosines(reference[n], got[n]).min()) for n in reference)
        cosines[margin] = worst if np.isfinite(worst) else 0.0
    return DraftGate(model.label, cosines, len(exact))


@dataclass(frozen=True)
class GateModel:
    """What the gate needs of one model of an image pass (a session only to measure)."""

    label: str
    spec: ImagePreprocessSpec
    identity: dict[str, Any]
    cache_dir: Path
    session: Session | None = None

    @property
    def key(self) -> str:
        return gate_key(self.identity, self.spec)

    def remembered(self) -> DraftGate | None:
        return DraftGateCache(self.cache_dir).get(self.key, self.label)


def pass_margin(gates: Sequence[DraftGate], floor: float) -> float | None:
    """One decode feeds every model of a pass: the largest margin any model needs, or none
    (exact decoding) if any model fails at every margin."""
    margins = [gate.margin(floor) for gate in gates]
    if any(m is None for m in margins):
        return None
    return max((m for m in margins if m is not None), default=None)


def run_gate(
    models: Sequence[GateModel], items: Sequence[Item], options: PipelineOptions
) -> tuple[list[DraftGate], str | None]:
    """Each model's gate, remembered or measured now on the run's own JPEGs; the second
    value says why nothing was measured (no large JPEG in the run: draft changes nothing)."""
    gates = [model.remembered() for model in models]
    missing = [i for i, gate in enumerate(gates) if gate is None]
    if missing:
        side = max(draft_side([models[i].spec], min(DRAFT_MARGINS)) for i in missing)
        sources = gate_sample(items, side)
        for i in missing:
            gate = measure(models[i], sources, options.item_timeout_s)
            if not gate.images:
                return [], (
                    f"none of the JPEGs sampled is large enough (>= {2 * side} px a side) for "
                    "draft decoding to shrink it"
                )
            DraftGateCache(models[i].cache_dir).put(models[i].key, gate)
            gates[i] = gate
    return [gate for gate in gates if gate is not None], None


def remembered_options(
    models: Sequence[GateModel], options: PipelineOptions
) -> PipelineOptions | None:
    """The gated options when every model's gate is on record (so decoding may start before
    the models open); None when a gate is still to be measured."""
    if not options.jpeg_draft:
        return options
    gates = [model.remembered() for model in models]
    if not models or any(gate is None for gate in gates):
        return None
    return decide([g for g in gates if g is not None], options)


def decide(gates: Sequence[DraftGate], options: PipelineOptions) -> PipelineOptions:
    margin = pass_margin(gates, options.draft_min_cosine)
    if margin is None:
        return replace(options, jpeg_draft=False)
    return replace(options, draft_margin=margin)


def gated_options(
    models: Sequence[GateModel], items: Sequence[Item], options: PipelineOptions, strict: bool
) -> tuple[PipelineOptions, list[str]]:
    """The pass's options with draft kept (at the margin the gate chose) or switched off, and
    the lines that say so. Under `strict`, a failed gate stops the run instead."""
    if not options.jpeg_draft or not models:
        return options, []
    gates, why_not = run_gate(models, items, options)
    if why_not is not None:  # unmeasured is never trusted: a rarer large JPEG may still come
        off = replace(options, jpeg_draft=False)
        return off, [f"--jpeg-draft switched off (nothing to gate it on): {why_not}"]
    lines = [gate.describe(options.draft_min_cosine) for gate in gates]
    gated = decide(gates, options)
    if strict and not gated.jpeg_draft:
        raise ExtractionError(
            "--strict: " + "; ".join(lines) + "; drop --jpeg-draft or lower --min-cosine"
        )
    return gated, lines
