"""Fusion of per-item features from two modalities, joined by item id (Ducho's four rules)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ducho_fast.core.errors import ConfigError

FUSIONS = ("concat", "sum", "mul", "mean")


def l2_normalize(array: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms == 0, 1, norms)


def fuse(arrays: Sequence[np.ndarray], method: str, normalize: bool = False) -> np.ndarray:
    """(N, D_i) arrays with rows already aligned by id -> (N, D') float32."""
    if method not in FUSIONS:
        raise ConfigError(f"unknown fusion {method!r}; use one of {list(FUSIONS)}")
    parts = [l2_normalize(a) if normalize else a for a in arrays]
    if method == "concat":
        return np.concatenate(parts, axis=1).astype(np.float32)
    dims = {a.shape[1] for a in parts}
    if len(dims) != 1:
        raise ConfigError(
            f"fusion {method!r} needs equal feature sizes; got {[a.shape[1] for a in parts]} "
            "(use concat, or models with the same output size)"
        )
    stacked = np.stack(parts)
    if method == "sum":
        return stacked.sum(axis=0).astype(np.float32)
    if method == "mul":
        return np.prod(stacked, axis=0).astype(np.float32)
    return stacked.mean(axis=0).astype(np.float32)


def join_by_id(
    ids_a: Sequence[str], ids_b: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Ids present in both, in the order of `ids_a`, with the row indices into each side."""
    where_b = {item_id: row for row, item_id in enumerate(ids_b)}
    common = [(i, where_b[item_id]) for i, item_id in enumerate(ids_a) if item_id in where_b]
    rows_a = np.asarray([a for a, _ in common], dtype=np.int64)
    rows_b = np.asarray([b for _, b in common], dtype=np.int64)
    return [ids_a[a] for a, _ in common], rows_a, rows_b
