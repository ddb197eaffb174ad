"""How close two sets of features are, row by row (numpy only: no torch on the ONNX path)."""

from __future__ import annotations

import numpy as np


def row_cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    """Cosine of each row pair (two all-zero rows count as equal)."""
    ref = reference.reshape(reference.shape[0], -1).astype(np.float64)
    got = candidate.reshape(candidate.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    dots = np.sum(ref * got, axis=1)
    both_zero = norms == 0
    return np.where(both_zero, 1.0, dots / np.where(both_zero, 1.0, norms))
