"""User features: each user's mean of the features of the items they interacted with in
train (never validation or test, which would leak the held-out items into the user), with
an optional exponential time decay: an interaction `h` time units before the user's latest
train interaction weighs `0.5 ** (h / half_life)`."""

from __future__ import annotations

import numpy as np

from ducho_fast.core.errors import ConfigError


def user_features(
    user_index: np.ndarray,
    item_index: np.ndarray,
    item_features: np.ndarray,
    n_users: int,
    times: np.ndarray | None = None,
    half_life: float | None = None,
) -> np.ndarray:
    """`(n_users, D)` float32: row u the (weighted) mean of the rows of u's items; a user
    with no rows given gets zeros (they have no train interaction)."""
    weights = np.ones(len(user_index), np.float64)
    if half_life is not None:
        if times is None:
            raise ConfigError("a half-life needs the interactions' time column (--time-column)")
        if half_life <= 0:
            raise ConfigError(f"half-life {half_life} must be positive")
        latest = np.full(n_users, -np.inf)
        np.maximum.at(latest, user_index, times)
        weights = 0.5 ** ((latest[user_index] - times) / half_life)
    sums = np.zeros((n_users, item_features.shape[1]), np.float64)
    np.add.at(sums, user_index, item_features[item_index] * weights[:, None])
    totals = np.zeros(n_users, np.float64)
    np.add.at(totals, user_index, weights)
    return (sums / np.maximum(totals, 1e-300)[:, None]).astype(np.float32)
