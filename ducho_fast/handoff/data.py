"""What every format writes from: interactions re-indexed to integers, their split, and the
item features aligned row for row with the item index."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureBlock:
    """One feature set as a format writes it: `rows[k]` the features of item `k`."""

    name: str  # image, text, audio, or the user's NAME=
    rows: np.ndarray  # (n_items, D) float32
    source: str  # the output folder it came from


@dataclass(frozen=True)
class HandoffData:
    """Item `k` is `items[k]`, user `u` is `users[u]` (ids in first-appearance order);
    interaction `r` is (`user_index[r]`, `item_index[r]`, `times[r]`) in `split[r]`."""

    users: tuple[str, ...]
    items: tuple[str, ...]
    user_index: np.ndarray
    item_index: np.ndarray
    split: np.ndarray  # interactions.TRAIN / VALID / TEST
    times: np.ndarray | None
    features: tuple[FeatureBlock, ...]
    user_features: Mapping[str, np.ndarray]  # name -> (n_users, D); empty unless asked

    def rows_in(self, label: int) -> np.ndarray:
        return np.flatnonzero(self.split == label)
