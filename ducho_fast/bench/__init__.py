"""`ducho-fast bench`: runtimes x precisions, pure inference and end to end, vs Ducho's way.

Names load on first use, so the per-run worker (`ducho_fast.bench.worker`) starts without
importing the exporter and torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["BenchConfig", "Variant", "run_bench"]
_HOMES = {"BenchConfig": ".config", "Variant": ".config", "run_bench": ".run"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(name)
    return getattr(import_module(_HOMES[name], __name__), name)
