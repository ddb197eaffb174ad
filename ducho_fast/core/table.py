"""A named table of entries (modalities, runtimes, sinks, executors): the shape every seam
shares. A duplicate name fails at registration; an unknown one names the known ones."""

from __future__ import annotations

from importlib import import_module
from typing import Protocol, TypeVar

from ducho_fast.core.errors import ConfigError


class Named(Protocol):
    name: str


T = TypeVar("T", bound=Named)


class Table(dict[str, T]):
    """`what` names an entry in messages; `builtins` is the module whose import registers the
    built-in entries, imported on first lookup so lower layers can hold the table."""

    def __init__(self, what: str, builtins: str):
        super().__init__()
        self.what = what
        self.builtins = builtins

    def register(self, entry: T) -> T:
        if entry.name in self:
            raise ValueError(f"{self.what} {entry.name!r} is registered twice")
        self[entry.name] = entry
        return entry

    def lookup(self, name: str) -> T:
        import_module(self.builtins)
        try:
            return self[name]
        except KeyError:
            raise ConfigError(f"unknown {self.what} {name!r}; use one of {self.names()}") from None

    def names(self) -> list[str]:
        import_module(self.builtins)
        return list(self)
