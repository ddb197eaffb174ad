"""Where exports, compiled engines and swept batch sizes are cached, decided at call time."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DUCHO_FAST_CACHE"
DEFAULT_CACHE = "~/.cache/ducho-fast"


def resolve_cache_dir(explicit: Path | str | None = None) -> Path:
    """`explicit`, else $DUCHO_FAST_CACHE, else ~/.cache/ducho-fast (read now, not at import,
    so a caller or test that sets the variable later is honoured)."""
    chosen = explicit if explicit is not None else os.environ.get(CACHE_ENV, DEFAULT_CACHE)
    return Path(chosen).expanduser()
