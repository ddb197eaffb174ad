"""`ducho-fast bench`: runtimes x precisions, pure inference and end to end, vs Ducho's way."""

from .config import BenchConfig, Variant
from .run import run_bench

__all__ = ["BenchConfig", "Variant", "run_bench"]
