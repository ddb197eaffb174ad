"""The sink table: each output format is one module (see `base.Sink`)."""

from ducho_fast.engine.sinks.base import (
    SINKS,
    LayerOutput,
    Sink,
    discard,
    format_names,
    get_sink,
    register_sink,
    sinks_for,
    takes_sequences,
)
from ducho_fast.engine.sinks.compact import CompactSink
from ducho_fast.engine.sinks.ducho import DuchoSink
from ducho_fast.engine.sinks.parquet import ParquetSink

register_sink(DuchoSink())
register_sink(CompactSink())
register_sink(ParquetSink())

__all__ = [
    "SINKS",
    "LayerOutput",
    "Sink",
    "discard",
    "format_names",
    "get_sink",
    "register_sink",
    "sinks_for",
    "takes_sequences",
]
