"""What flows through a run: items to extract, and the record of any that could not be."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    """An item that got no features, with the stage that failed and why (failures.tsv)."""

    item_id: str
    path: str
    stage: str
    error: str

    def row(self) -> list[str]:
        return [self.item_id, self.path, self.stage, self.error.replace("\n", " ")]


@dataclass(frozen=True)
class Item:
    """One unit of work: an id and its payload (an image path or a text)."""

    item_id: str
    path: str
    text: str | None = None


@dataclass(frozen=True)
class Listing:
    items: tuple[Item, ...]
    failures: tuple[Failure, ...]
