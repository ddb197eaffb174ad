"""The one surface every runtime offers: named numpy inputs in, named numpy outputs out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np


class Session(Protocol):
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...
