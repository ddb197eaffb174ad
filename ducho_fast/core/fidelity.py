"""How close two sets of features are, row by row (numpy only: no torch on the ONNX path)."""

from __future__ import annotations

import numpy as np


def row_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine of each row pair: two all-zero rows count as equal, one all-zero row against a
    non-zero one as 0, and a row with NaN or infinity as NaN (which fails every gate)."""
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    got = candidate.reshape(candidate.shape[0], -1).astype(np.float64)
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
