"""Atomic, resumable pass state: committed shards, their features, and the sinks' files.

A run's items are split into shards. For each shard, the engine's own copy of its features
(float32, in the state folder) and every sink's files are written to temporary names and
renamed; the shard's marker (`shard-NNNNN.json`) is written last. A shard with a marker whose
fingerprint matches is never redone; one without is redone whole, so an interrupted run (even
SIGKILL) resumes with nothing missing or duplicated. Fusion and the end-of-pass sinks read the
engine's copy, never another sink's files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.io import atomic_bytes, atomic_json, npy_bytes
from ducho_fast.core.records import Failure
from ducho_fast.engine.sinks import LayerOutput, get_sink

STATE_FILE = "run.json"
FAILURE_COLUMNS = ("id", "path", "stage", "error")


def features_dir(state_dir: Path, output: str) -> Path:
    """Where the engine keeps one output's committed shards (named by a hash: any label)."""
    return state_dir / "features" / hashlib.sha256(output.encode()).hexdigest()[:16]


class ShardStore:
    """The committed state of one extraction pass (one source through one or more models)."""

    def __init__(self, state_dir: Path, fingerprint: dict, outputs: Sequence[LayerOutput]):
        self.state_dir = state_dir
        self.fingerprint = fingerprint
        self.outputs = {output.name: output for output in outputs}

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
        folders = {self.state_dir, *map(Path, self.output_dirs())}
        folders |= {features_dir(self.state_dir, name) for name in self.outputs}
        for folder in folders:
            if folder.is_dir():
                for stale in folder.glob(".*.tmp*"):
                    stale.unlink(missing_ok=True)

    def has_state(self) -> bool:
        return (self.state_dir / STATE_FILE).is_file()

    def output_dirs(self) -> list[str]:
        return [
            str(folder) for output in self.outputs.values() for folder in output.folders.values()
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
        """Write one shard's features and sink files, then its marker (the commit point)."""
        for name, array in features.items():
            output = self.outputs[name]
            rows = array.astype(np.float32)
            shard_file = features_dir(self.state_dir, name) / f"shard-{shard:05d}.npy"
            atomic_bytes(shard_file, npy_bytes(rows))
            for sink_name, folder in output.folders.items():
                get_sink(sink_name).write_shard(folder, ids, output.per_item(rows))
        atomic_json(
            self.marker(shard),
            {"shard": shard, "ids": list(ids), "failures": [f.__dict__ for f in failures]},
        )

    def committed(self) -> list[dict]:
        return [json.loads(p.read_text()) for p in sorted(self.state_dir.glob("shard-*.json"))]

    def read_features(self, output: str, shards: Sequence[dict]) -> Iterator[np.ndarray]:
        """The committed features of `output`, shard by shard in order (memory-mapped)."""
        folder = features_dir(self.state_dir, output)
        for shard in shards:
            if shard["ids"]:
                yield np.load(folder / f"shard-{shard['shard']:05d}.npy", mmap_mode="r")


def committed_output(state_dir: Path, output: str) -> tuple[list[str], np.ndarray]:
    """Ids and float32 features of one output of a finished pass, in commit order."""
    store = ShardStore(state_dir, {}, [])
    shards = store.committed()
    ids = [item_id for shard in shards for item_id in shard["ids"]]
    arrays = list(store.read_features(output, shards))
    if not arrays:
        return ids, np.empty((0, 0), dtype=np.float32)
    return ids, np.concatenate(arrays).astype(np.float32)


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
