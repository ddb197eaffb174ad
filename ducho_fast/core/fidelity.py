"""How close two sets of features are, and the gates they must pass.

numpy only: the runtime path (extract, `--runtime auto`) imports this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def row_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine of each row pair: two all-zero rows count as equal, one all-zero row against a
    non-zero one as 0, and a row with NaN or infinity as NaN (which fails every gate). A
    sequence output `(N, T, D)` (audio `pooling: none`) is compared frame by frame (its
    padded frames are zero on both sides, so they count as equal)."""
    rows = reference.shape[0] * reference.shape[1] if reference.ndim == 3 else reference.shape[0]
    ref = reference.reshape(rows, -1).astype(np.float64)
    got = candidate.reshape(rows, -1).astype(np.float64)
    ref_norm, got_norm = np.linalg.norm(ref, axis=1), np.linalg.norm(got, axis=1)
    dots = np.sum(ref * got, axis=1)
    norms = ref_norm * got_norm
    with np.errstate(invalid="ignore", divide="ignore"):
        cosines = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    cosines = np.where((ref_norm == 0) & (got_norm == 0), 1.0, cosines)
    finite = np.isfinite(ref).all(axis=1) & np.isfinite(got).all(axis=1)
    return np.where(finite, cosines, np.nan)


def worst_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """The smallest row cosine, NaN when any row is not finite (so `not worst >= floor`)."""
    cosines = row_cosines(reference, candidate)
    return float(np.nan) if np.isnan(cosines).any() else float(cosines.min())


@dataclass(frozen=True)
class CaseResult:
    """One output of one validation case against its gate."""

    graph: str
    case: str
    output: str
    min_cosine: float
    mean_cosine: float
    max_abs: float
    passed: bool


def compare(
    graph: str, case: str, name: str, ref: np.ndarray, got: np.ndarray, gate: Gate
) -> CaseResult:
    """Cosine row by row and max-abs relative to the reference's scale: a mis-scaled output
    with perfect cosine still fails an fp32 gate."""
    if ref.shape != got.shape:
        return CaseResult(graph, case, name, float("nan"), float("nan"), float("inf"), False)
    cosines = row_cosines(ref, got)
    max_abs = float(np.max(np.abs(ref.astype(np.float64) - got))) if ref.size else 0.0
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    ok = bool(np.all(np.isfinite(got))) and float(cosines.min()) >= gate.min_cosine
    if gate.max_abs is not None:
        ok = ok and max_abs <= gate.max_abs * scale
    return CaseResult(graph, case, name, float(cosines.min()), float(cosines.mean()), max_abs, ok)
