"""Checks an exported graph against the eager tower at several batch sizes and lengths.

An export is valid only when every output of every case meets the precision's gate; otherwise
an `ExportValidationError` lists each failing output with its numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ducho_fast.core import log as logs
from ducho_fast.core.errors import ExportValidationError, OutputMismatch
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.exporter.onnx_export import eager_outputs
from ducho_fast.modalities import Sample, modality
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
NO_SAMPLE = Sample()
log = logs.get("export")


@dataclass(frozen=True)
class CaseResult:
    graph: str
    case: str
    output: str
    min_cosine: float
    mean_cosine: float
    max_abs: float
    passed: bool


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


def validation_cases(tower: Tower, sample: Sample = NO_SAMPLE) -> list[tuple[str, dict]]:
    """Named input sets (every batch size, and lengths where the modality has them)."""
    return modality(tower.name).validation_cases(tower, sample)


def validate_tower(
    tower: Tower, session: Session, precision: str, sample: Sample = NO_SAMPLE
) -> list[CaseResult]:
    """Runs eager and the session on every case; returns one result per output and case."""
    gate = GATES[precision]
    results = []
    for case, inputs in validation_cases(tower, sample):
        reference = eager_outputs(tower, inputs)
        produced = session.run(inputs)
        found = [
            compare(tower.name, case, name, reference[name], produced[name], gate)
            for name in tower.output_names
        ]
        worst = min(r.min_cosine for r in found)
        verdict = "ok" if all(r.passed for r in found) else "FAILS"
        log.info("  %s %s [%s]: min cosine %.6f %s", tower.name, precision, case, worst, verdict)
        results += found
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
