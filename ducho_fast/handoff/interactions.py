"""Interactions from a CSV/TSV (MovieLens' `.inter`, a user's export), and the split rule.

Split, per user: with a time column, the user's interactions in time order (ties in file
order), the last `test` share to test, the `valid` share before them to validation, the rest
to train; without one, the same on a seeded shuffle of the user's interactions. A share
rounds to the nearest count but is at least one while one interaction stays in train (test
first): 1 interaction -> train; 2 -> train, test; 3 -> one of each; 10 -> 8, 1, 1.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ducho_fast.core.errors import ConfigError, InputError
from ducho_fast.outputs.read import delimiter_of

TRAIN, VALID, TEST = 0, 1, 2  # MMRec's x_label values


@dataclass(frozen=True)
class Interactions:
    """Rows of the interactions file: user and item ids, and times when a column was given."""

    users: tuple[str, ...]
    items: tuple[str, ...]
    times: np.ndarray | None  # float64, one per row


def read_interactions(
    path: Path, user_column: str, item_column: str, time_column: str | None = None
) -> Interactions:
    """The three columns of a CSV/TSV with a header (delimiter by suffix, else sniffed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the interactions file {path}: {exc.strerror}") from None
    rows = csv.reader(text.splitlines(), delimiter=delimiter_of(path, text[:4096]))
    header = next(rows, [])
    wanted = [c for c in (user_column, item_column, time_column) if c is not None]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ConfigError(f"{path}: no column {missing[0]!r}; its columns are {header}")
    where = [header.index(c) for c in wanted]
    users, items, times = [], [], []
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        try:
            values = [row[i] for i in where]
        except IndexError:
            raise InputError(
                f"{path} line {line}: {len(row)} fields, header has {len(header)}"
            ) from None
        users.append(values[0])
        items.append(values[1])
        if time_column is not None:
            times.append(parse_time(values[2], path, line))
    if not users:
        raise InputError(f"{path} has no interactions (a header only)")
    stamps = np.asarray(times, np.float64) if time_column is not None else None
    return Interactions(tuple(users), tuple(items), stamps)


def parse_time(value: str, path: Path, line: int) -> float:
    """A number (a unix time, a day count) or an ISO date/time; a blank, NaN, infinite or
    not-a-time value is an error (it would sort first, into train, and poison decayed means)."""
    try:
        parsed = float(value)
    except ValueError:
        try:
            moment = np.datetime64(value, "s")
        except ValueError:
            moment = np.datetime64("NaT")
        parsed = float("nan") if np.isnat(moment) else float(moment.astype(np.int64))
    if not math.isfinite(parsed):
        raise InputError(f"{path} line {line}: time {value!r} is neither a number nor an ISO date")
    return parsed


def split_rows(
    users: np.ndarray,
    times: np.ndarray | None,
    shares: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> np.ndarray:
    """TRAIN / VALID / TEST for each row, by the rule in the module's docstring."""
    _, valid_share, test_share = check_shares(shares)
    rng = np.random.default_rng(seed)
    labels = np.full(len(users), TRAIN, np.int8)
    order = np.argsort(users, kind="stable")  # each user's rows, in file order
    starts = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1]])
    for rows in np.split(order, starts[1:]):
        if times is not None:
            rows = rows[np.argsort(times[rows], kind="stable")]
        else:
            rows = rng.permutation(rows)
        n_test, n_valid = held_out(len(rows), valid_share, test_share)
        labels[rows[len(rows) - n_test :]] = TEST
        labels[rows[len(rows) - n_test - n_valid : len(rows) - n_test]] = VALID
    return labels


def held_out(count: int, valid_share: float, test_share: float) -> tuple[int, int]:
    """How many of a user's `count` rows go to test and validation (one stays in train)."""
    n_test = min(max(1, round(count * test_share)) if test_share else 0, max(count - 1, 0))
    left = max(count - 1 - n_test, 0)
    n_valid = min(max(1, round(count * valid_share)) if valid_share else 0, left)
    return n_test, n_valid


def check_shares(shares: Sequence[float]) -> tuple[float, float, float]:
    if len(shares) != 3 or min(shares) < 0 or abs(sum(shares) - 1) > 1e-6 or shares[0] <= 0:
        raise ConfigError(
            f"split shares {tuple(shares)} must be train,valid,test >= 0 summing to 1 "
            "(train > 0), e.g. 0.8,0.1,0.1"
        )
    return float(shares[0]), float(shares[1]), float(shares[2])
