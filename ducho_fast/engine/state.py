"""Atomic, resumable output: committed shards, Ducho's per-item files, compact arrays.

A run's items are split into shards. For each shard, every output file is written to a
temporary name and renamed; the shard's marker (`shard-NNNNN.json`) is written last. A shard
with a marker whose fingerprint matches is never redone; one without is redone whole, so an
interrupted run (even SIGKILL) resumes with nothing missing or duplicated.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.io import atomic_bytes, atomic_json, npy_bytes
from ducho_fast.core.records import Failure

STATE_FILE = "run.json"
FAILURE_COLUMNS = ("id", "path", "stage", "error")


@dataclass(frozen=True)
class Target:
    """Where one (model, layer) output goes: compact folder and/or Ducho's per-item folder."""

    name: str
    compact_dir: Path | None
    ducho_dir: Path | None
    fp16: bool = False


class ShardStore:
    """The committed state of one extraction pass (one source through one or more models)."""

    def __init__(self, state_dir: Path, fingerprint: dict, targets: Sequence[Target]):
        self.state_dir = state_dir
        self.fingerprint = fingerprint
        self.targets = {target.name: target for target in targets}

    def open(self, overwrite: bool) -> None:
        """Refuse output from a different configuration unless `overwrite` (then wipe it)."""
        state = self.state_dir / STATE_FILE
        if state.is_file():
            saved = json.loads(state.read_text())
            previous = saved.get("fingerprint")
            if previous != self.fingerprint:
                if not overwrite:
                    raise ConfigError(
                        f"{self.state_dir} holds output of a different configuration "
                        f"(model, export, preprocessing or precision changed): refusing to mix "
                        f"them. Re-run with --overwrite to replace it.\n  before: {previous}\n"
                        f"  now:    {self.fingerprint}"
                    )
                self.wipe(saved.get("outputs", []))
        elif overwrite:
            self.wipe([])
        self.remove_partial_writes()
        atomic_json(state, {"fingerprint": self.fingerprint, "outputs": self.output_dirs()})

    def remove_partial_writes(self) -> None:
        """Temporary files a killed run left behind (written, never renamed into place)."""
        for folder in {self.state_dir, *map(Path, self.output_dirs())}:
            if folder.is_dir():
                for stale in folder.glob(".*.tmp*"):
                    stale.unlink(missing_ok=True)

    def has_state(self) -> bool:
        return (self.state_dir / STATE_FILE).is_file()

    def output_dirs(self) -> list[str]:
        return [
            str(folder)
            for target in self.targets.values()
            for folder in (target.compact_dir, target.ducho_dir)
            if folder is not None
        ]

    def wipe(self, previous_outputs: Sequence[str]) -> None:
        """Remove this pass's state and outputs, and those the previous run recorded."""
        shutil.rmtree(self.state_dir, ignore_errors=True)
        for folder in {*previous_outputs, *self.output_dirs()}:
            shutil.rmtree(folder, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def marker(self, shard: int) -> Path:
        return self.state_dir / f"shard-{shard:05d}.json"

    def is_done(self, shard: int) -> bool:
        return self.marker(shard).is_file()

    def commit(
        self,
        shard: int,
        ids: Sequence[str],
        features: Mapping[str, np.ndarray],
        failures: Sequence[Failure],
    ) -> None:
        """Write one shard's outputs, then its marker (the commit point)."""
        for name, array in features.items():
            target = self.targets[name]
            stored = array.astype(np.float16 if target.fp16 else np.float32)
            if target.compact_dir is not None:
                atomic_bytes(
                    target.compact_dir / "shards" / f"shard-{shard:05d}.npy", npy_bytes(stored)
                )
            if target.ducho_dir is not None:
                write_per_item(target.ducho_dir, ids, array.astype(np.float32))
        atomic_json(
            self.marker(shard),
            {
                "shard": shard,
                "ids": list(ids),
                "failures": [f.__dict__ for f in failures],
            },
        )

    def committed(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.state_dir.glob("shard-*.json"))]


def write_per_item(folder: Path, ids: Sequence[str], array: np.ndarray) -> None:
    """Ducho's layout: one float32 (1, D) `.npy` per item."""
    folder.mkdir(parents=True, exist_ok=True)
    for row, item_id in enumerate(ids):
        atomic_bytes(folder / f"{item_id}.npy", npy_bytes(array[row : row + 1]))


def finalize_compact(target: Target, shards: Sequence[dict], manifest: dict) -> Path | None:
    """Concatenate committed shards into features.npy (N, D) + ids.txt + manifest.json."""
    if target.compact_dir is None:
        return None
    folder = target.compact_dir
    parts = [folder / "shards" / f"shard-{s['shard']:05d}.npy" for s in shards if s["ids"]]
    arrays = [np.load(p, mmap_mode="r") for p in parts]
    count = sum(a.shape[0] for a in arrays)
    dim = arrays[0].shape[1] if arrays else 0
    dtype = np.float16 if target.fp16 else np.float32
    tmp = folder / ".features.npy.tmp"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(count, dim))
    offset = 0
    for array in arrays:
        out[offset : offset + array.shape[0]] = array
        offset += array.shape[0]
    out.flush()
    del out
    os.replace(tmp, folder / "features.npy")
    ids = [item_id for s in shards for item_id in s["ids"]]
    atomic_bytes(folder / "ids.txt", ("\n".join(ids) + ("\n" if ids else "")).encode())
    atomic_json(
        folder / "manifest.json",
        {**manifest, "count": count, "dim": dim, "dtype": np.dtype(dtype).name},
    )
    return folder


def write_failures(path: Path, failures: Sequence[Failure]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(FAILURE_COLUMNS)
    writer.writerows(f.row() for f in failures)
    atomic_bytes(path, buffer.getvalue().encode())


def read_failures(path: Path) -> list[Failure]:
    if not path.is_file():
        return []
    with path.open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return [Failure(r["id"], r["path"], r["stage"], r["error"]) for r in rows]
