"""Checks an exported graph against the eager tower at several batch sizes and lengths.

An export is valid only when every output of every case meets the precision's gate; otherwise
an `ExportValidationError` lists each failing output with its numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from ducho_fast.core import log as logs
from ducho_fast.core.errors import ExportValidationError, OutputMismatch
from ducho_fast.core.fidelity import GATES, CaseResult, compare
from ducho_fast.exporter.onnx_export import eager_outputs
from ducho_fast.modalities import Sample, modality
from ducho_fast.models.spec import Tower
from ducho_fast.runtime.base import Session

NO_SAMPLE = Sample()
log = logs.get("export")


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
