"""`handoff`: extraction outputs + an interactions file -> what a recommender framework
loads, with nothing silently dropped or filled.

The items handed off are those with interactions and features in every feature set.
Interactions of an item without features are left out of every file, and the item is
listed in `missing-features.tsv` (with its interaction count and the sets that lack it);
features of items without interactions are listed in `unused-features.tsv`. Both counts are
in `handoff.json` and the summary; `strict` refuses either instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ducho_fast.core.errors import ConfigError, InputError
from ducho_fast.core.io import atomic_json
from ducho_fast.handoff.data import FeatureBlock, HandoffData
from ducho_fast.handoff.formats import get_format, write_array, write_rows
from ducho_fast.handoff.interactions import (
    TEST,
    TRAIN,
    VALID,
    Interactions,
    read_interactions,
    split_rows,
)
from ducho_fast.handoff.users import user_features
from ducho_fast.outputs import FeatureSet, load_features

REPORT = "handoff.json"
MISSING = "missing-features.tsv"
UNUSED = "unused-features.tsv"
MODALITY_NAMES = {"image": "image", "text": "text", "audio": "audio"}
PATH_HINTS = {"visual": "image", "image": "image", "textual": "text", "text": "text"}


@dataclass(frozen=True)
class FeatureSource:
    """One `--features [NAME=]DIR`; without NAME, the modality the run recorded."""

    folder: Path
    name: str | None = None

    @classmethod
    def parse(cls, value: str) -> FeatureSource:
        name, sep, folder = value.partition("=")
        if sep and name and "/" not in name:
            return cls(Path(folder), name)
        return cls(Path(value))


@dataclass(frozen=True)
class HandoffOptions:
    features: tuple[FeatureSource, ...]
    interactions: Path
    user_column: str
    item_column: str
    output: Path
    format: str
    time_column: str | None = None
    shares: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, validation, test
    seed: int = 0  # of the per-user shuffle when there is no time column
    users: bool = False  # also write user features (train-only means)
    half_life: float | None = None  # time decay of user features, in the time column's units
    strict: bool = False  # refuse items missing features or features missing interactions


@dataclass(frozen=True)
class HandoffReport:
    folder: Path
    format: str
    users: int
    items: int
    interactions: dict[str, int]
    missing_items: int  # items with interactions, without features in some set
    dropped_interactions: int  # their interactions
    unused_items: int  # items with features, without interactions
    files: list[Path] = field(default_factory=list)


def handoff(options: HandoffOptions) -> HandoffReport:
    """Read, align, split and write; the report lists what was left out and why."""
    writer = get_format(options.format)
    if not options.features:
        raise ConfigError("give at least one --features folder")
    sets = named_sets(options.features)
    table = read_interactions(
        options.interactions, options.user_column, options.item_column, options.time_column
    )
    covered = set.intersection(*(set(s.ids) for s in sets.values()))
    missing, unused = left_out(table, sets, covered)
    if options.strict and (missing or unused):
        raise InputError(
            f"--strict: {len(missing)} items with interactions have no features, {len(unused)} "
            "items with features have no interactions (run without --strict to list them)"
        )
    data = build(table, sets, covered, options)
    folder = options.output
    folder.mkdir(parents=True, exist_ok=True)
    files = writer.write(data, folder)
    files += write_users(data, folder)
    files.append(write_rows(folder / MISSING, missing, ["id", "interactions", "missing_in"]))
    files.append(write_rows(folder / UNUSED, unused, ["id", "feature_set"]))
    report = HandoffReport(
        folder,
        options.format,
        len(data.users),
        len(data.items),
        {name: int((data.split == label).sum()) for name, label in SPLITS.items()},
        len(missing),
        sum(int(row[1]) for row in missing),
        len({row[0] for row in unused}),
        files,
    )
    atomic_json(folder / REPORT, record(report, options, sets, data))
    return report


SPLITS = {"train": TRAIN, "valid": VALID, "test": TEST}


def named_sets(sources: Sequence[FeatureSource]) -> dict[str, FeatureSet]:
    sets: dict[str, FeatureSet] = {}
    for source in sources:
        features = load_features(source.folder)
        name = source.name or default_name(features)
        if name in sets:
            raise ConfigError(
                f"two feature sets are named {name!r} ({sets[name].folder}, {features.folder}); "
                "name them: --features NAME=DIR"
            )
        if not features.ids:
            raise InputError(f"{features.folder} holds no features")
        sets[name] = features
    return sets


def default_name(features: FeatureSet) -> str:
    """image / text / audio from the run's record, else from the folder's path."""
    recorded = MODALITY_NAMES.get(features.modality() or "")
    if recorded:
        return recorded
    for part in reversed(features.folder.parts):
        if part in PATH_HINTS:
            return PATH_HINTS[part]
    return features.folder.parent.name


def left_out(
    table: Interactions, sets: dict[str, FeatureSet], covered: set[str]
) -> tuple[list[list[object]], list[list[str]]]:
    """Items with interactions but features missing in some set (id, interactions, the
    sets), and items with features but no interactions (id, set)."""
    counts: dict[str, int] = {}
    for item in table.items:
        counts[item] = counts.get(item, 0) + 1
    has = {name: set(s.ids) for name, s in sets.items()}
    missing = [
        [item, count, ",".join(name for name, ids in has.items() if item not in ids)]
        for item, count in counts.items()
        if item not in covered
    ]
    unused = [[i, name] for name, s in sets.items() for i in s.ids if i not in counts]
    return missing, unused


def build(
    table: Interactions, sets: dict[str, FeatureSet], covered: set[str], options: HandoffOptions
) -> HandoffData:
    keep = np.fromiter((item in covered for item in table.items), bool, len(table.items))
    if not keep.any():
        raise InputError(
            f"no item of {options.interactions} has features in every set "
            f"({', '.join(sets)}); are the ids the same? (see {MISSING})"
        )
    users = np.asarray(table.users, dtype=object)[keep]
    items = np.asarray(table.items, dtype=object)[keep]
    times = None if table.times is None else table.times[keep]
    user_ids, user_index = first_appearance(users)
    item_ids, item_index = first_appearance(items)
    split = split_rows(user_index, times, options.shares, options.seed)
    blocks = tuple(
        FeatureBlock(name, rows_for(s, item_ids), str(s.folder)) for name, s in sets.items()
    )
    train = split == TRAIN
    means = {
        b.name: user_features(
            user_index[train],
            item_index[train],
            b.rows,
            len(user_ids),
            None if times is None else times[train],
            options.half_life,
        )
        for b in blocks
        if options.users
    }
    return HandoffData(user_ids, item_ids, user_index, item_index, split, times, blocks, means)


def first_appearance(values: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    index: dict[str, int] = {}
    positions = np.fromiter((index.setdefault(v, len(index)) for v in values), np.int64)
    return tuple(index), positions


def rows_for(features: FeatureSet, ids: Sequence[str]) -> np.ndarray:
    where = {item: row for row, item in enumerate(features.ids)}
    return features.features[[where[i] for i in ids]].astype(np.float32)


def write_users(data: HandoffData, folder: Path) -> list[Path]:
    """`user_features/<set>.npy`, row u the user of index u (`user_ids.txt`)."""
    if not data.user_features:
        return []
    where = folder / "user_features"
    files = [write_array(where / f"{n}.npy", rows) for n, rows in data.user_features.items()]
    files.append(write_rows(where / "user_ids.txt", ([u] for u in data.users)))
    return files


def record(
    report: HandoffReport, options: HandoffOptions, sets: dict[str, FeatureSet], data: HandoffData
) -> dict:
    return {
        "format": report.format,
        "users": report.users,
        "items": report.items,
        "interactions": report.interactions,
        "split": {
            "shares": list(options.shares),
            "rule": "per user, chronological" if data.times is not None else "per user, seeded",
            "seed": options.seed,
        },
        "missing_features": {
            "items": report.missing_items,
            "interactions_left_out": report.dropped_interactions,
            "listed_in": MISSING,
        },
        "unused_features": {"items": report.unused_items, "listed_in": UNUSED},
        "feature_sets": {
            name: {
                "folder": str(s.folder),
                "layout": s.kind,
                "dim": s.dim,
                "fingerprint": s.meta.get("fingerprint"),
            }
            for name, s in sets.items()
        },
        "user_features": (
            {"half_life": options.half_life, "from": "train interactions"}
            if options.users
            else None
        ),
    }
