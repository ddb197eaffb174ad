"""Where exports, compiled engines and swept batch sizes are cached, decided at call time."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from ducho_fast.core.io import atomic_json

CACHE_ENV = "DUCHO_FAST_CACHE"
DEFAULT_CACHE = "~/.cache/ducho-fast"


def resolve_cache_dir(explicit: Path | str | None = None) -> Path:
    """`explicit`, else $DUCHO_FAST_CACHE, else ~/.cache/ducho-fast (read now, not at import,
    so a caller or test that sets the variable later is honoured)."""
    chosen = explicit if explicit is not None else os.environ.get(CACHE_ENV, DEFAULT_CACHE)
    return Path(chosen).expanduser()


class Remembered:
    """Measurements kept by key in one JSON object under the cache folder (batch sizes, runtime
    choices, int8 variants, draft gates): read whole, written by atomic replace, best effort:
    a missing, damaged or read-only file means measuring again, never a failed run."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> dict[str, Any]:
        try:
            found = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def entry(self, key: str) -> Any | None:
        return self.read().get(key)

    def remember(self, key: str, value: Any) -> None:
        with contextlib.suppress(OSError):
            atomic_json(self.path, {**self.read(), key: value})
