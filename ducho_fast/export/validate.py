"""Checks an exported graph against the eager tower at several batch sizes and lengths.

An export is valid only when every output of every case meets the precision's gate; otherwise
an `ExportValidationError` lists each failing output with its numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ducho_fast.core.errors import ExportValidationError, OutputMismatch
from ducho_fast.core.image import decode_image, preprocess_image
from ducho_fast.export.onnx_export import eager_outputs
from ducho_fast.models.spec import Tower
from ducho_fast.runtime.base import Session


@dataclass(frozen=True)
class Gate:
    """Fidelity gate of one precision; `max_abs` is relative to max(1, max |reference|)."""

    min_cosine: float
    max_abs: float | None


GATES = {
    "fp32": Gate(min_cosine=0.9999, max_abs=1e-4),
    "fp16": Gate(min_cosine=0.999, max_abs=None),
    "int8": Gate(min_cosine=0.99, max_abs=None),
}
BATCH_SIZES = (1, 3, 17)
WORDS_TEXT = (
    "soft cotton jersey top with a round neckline and short sleeves slim fit trousers in "
    "woven fabric with a high waist zip fly and side pockets knitted jumper in a wool blend "
    "sneakers with padded edges lace up front and a rubber sole long dress in airy chiffon"
)
WORDS = tuple(WORDS_TEXT.split())


@dataclass(frozen=True)
class CaseResult:
    graph: str
    case: str
    output: str
    min_cosine: float
    mean_cosine: float
    max_abs: float
    passed: bool


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


def real_images(paths: Sequence[Path], tower: Tower, count: int) -> np.ndarray:
    assert tower.image is not None
    pixels = [preprocess_image(decode_image(p), tower.image) for p in paths]
    return np.stack([pixels[i % len(pixels)] for i in range(count)])


def synthetic_texts(count: int, seed: int = 0) -> list[str]:
    """Texts whose lengths run from one word to well past typical max lengths."""
    rng = np.random.default_rng(seed)
    lengths = (1, 3, 6, 11, 19, 33, 70, 140, 300)
    return [" ".join(rng.choice(WORDS, size=lengths[i % len(lengths)])) for i in range(count)]


def sequence_lengths(max_length: int) -> tuple[int, ...]:
    return tuple(sorted({min(7, max_length), min(29, max_length), max_length}))


def validation_cases(
    tower: Tower, images: Sequence[Path] = ()
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Named input sets: every batch size, and for text every sequence length."""
    cases = []
    if tower.name == "image":
        assert tower.image is not None
        for batch in BATCH_SIZES:
            pixels = (
                real_images(images, tower, batch)
                if images
                else synthetic_images(batch, tower.image.input_size, seed=batch)
            )
            source = ",sample images" if images else ""
            cases.append((f"batch={batch}{source}", {"pixels": pixels}))
        return cases
    assert tower.text is not None
    for length in sequence_lengths(tower.text.max_length):
        for batch in BATCH_SIZES:
            encoded = tower.tokenizer(
                synthetic_texts(batch, seed=length),
                padding="max_length",
                truncation=True,
                max_length=length,
                return_tensors="np",
            )
            inputs = {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
            cases.append((f"batch={batch},seq={length}", inputs))
    return cases


def row_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    got = candidate.reshape(candidate.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    dots = np.sum(ref * got, axis=1)
    both_zero = norms == 0
    return np.where(both_zero, 1.0, dots / np.where(both_zero, 1.0, norms))


def compare(graph: str, case: str, name: str, ref: np.ndarray, got: np.ndarray, gate: Gate):
    if ref.shape != got.shape:
        return CaseResult(graph, case, name, float("nan"), float("nan"), float("inf"), False)
    cosines = row_cosines(ref, got)
    max_abs = float(np.max(np.abs(ref.astype(np.float64) - got))) if ref.size else 0.0
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    ok = bool(np.all(np.isfinite(got))) and float(cosines.min()) >= gate.min_cosine
    if gate.max_abs is not None:
        ok = ok and max_abs <= gate.max_abs * scale
    return CaseResult(graph, case, name, float(cosines.min()), float(cosines.mean()), max_abs, ok)


def validate_tower(
    tower: Tower, session: Session, precision: str, images: Sequence[Path] = ()
) -> list[CaseResult]:
    """Runs eager and the session on every case; returns one result per output and case."""
    gate = GATES[precision]
    results = []
    for case, inputs in validation_cases(tower, images):
        reference = eager_outputs(tower, inputs)
        produced = session.run(inputs)
        for name in tower.output_names:
            results.append(compare(tower.name, case, name, reference[name], produced[name], gate))
    return results


def raise_on_failures(results: Sequence[CaseResult], precision: str) -> None:
    gate = GATES[precision]
    failures = [
        OutputMismatch(
            r.graph, r.output, r.case, r.min_cosine, r.max_abs, gate.min_cosine, gate.max_abs
        )
        for r in results
        if not r.passed
    ]
    if failures:
        raise ExportValidationError(precision, failures)


def summarize(results: Sequence[CaseResult], precision: str) -> dict:
    """The validation section of the manifest: the gate, the worst figures and every case."""
    return {
        "precision": precision,
        "gate": asdict(GATES[precision]),
        "passed": all(r.passed for r in results),
        "min_cosine": min((r.min_cosine for r in results), default=float("nan")),
        "max_abs": max((r.max_abs for r in results), default=float("nan")),
        "cases": [asdict(r) for r in results],
    }
