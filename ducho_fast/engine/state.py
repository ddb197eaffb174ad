"""Atomic, resumable pass state: committed shards, their features, and the sinks' files.

The state lives inside the output it describes (`<output root>/.ducho-fast/state/<pass>/`), so
it moves and goes with it. It is a journal of shards. Each shard holds some items' features
(the engine's own float32 copy, which fusion and every sink read) and, in its marker
(`shard-NNNNN.json`, written last: the commit point), each item's content fingerprint and the
items that failed. The latest record of an id wins. A rerun recomputes, in new shards, every
item whose latest record is a failure, whose fingerprint differs from its input's now, or that
has no record; everything else is kept. A marker whose features are missing or do not have
the rows it lists is dropped on reopening, so its items are redone, never trusted. Sink files
of a commit that never reached its marker are removed on reopening (its intent file names
them). `finish` gives the pass's live rows: the current items, in input order.

A sequence output (`LayerOutput.sequence`: a `(T, D)` per item, T varying) keeps a shard as
its items' frames stacked, `(sum T, D)`, and each item's T in the marker (`frames`), so the
commit point covers them; a marker whose frame counts do not add up to its features' rows
is dropped like any damaged one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.io import atomic_bytes, atomic_json, npy_bytes
from ducho_fast.core.records import Failure, Item, Shard
from ducho_fast.core.sequences import offsets, pack, sequences, unpack
from ducho_fast.engine.fingerprint import FileStamps
from ducho_fast.engine.sinks import LayerOutput, discard, get_sink

STATE_VERSION = 2  # 2: per-item fingerprints, a journal of shards (1 had neither)
STATE_HOME = Path(".ducho-fast", "state")
STATE_FILE = "run.json"
LIVE_FILE = "live.json"
STAMPS_FILE = "files.json"
FAILURE_COLUMNS = ("id", "path", "stage", "error")
BLOCK_ROWS = 4096


def runtime_free(fingerprint: Any) -> Any:
    """A pass's fingerprint without the runtime of its fp32 models: every runtime's fp32 output
    passes the export's fp32 gate (max-abs included) against the same reference, so fp32
    features are the same features whichever runtime the measured default picked on this CPU.
    A reduced precision's values are its runtime's, so there the runtime stays."""
    if not isinstance(fingerprint, dict) or not isinstance(fingerprint.get("models"), list):
        return fingerprint
    models = [
        {k: v for k, v in m.items() if k not in ("runtime", "ort_provider")}
        if isinstance(m, dict) and m.get("precision") == "fp32" and on_gated_cpu_runtime(m)
        else m
        for m in fingerprint["models"]
    ]
    return {**fingerprint, "models": models}


def on_gated_cpu_runtime(model: dict) -> bool:
    """The runtimes the fp32 gate compares (ONNX Runtime's CPU provider, OpenVINO): a GPU
    provider or an eager runtime is never gated against them, so it stays a change."""
    return model.get("runtime") in ("onnxruntime", "openvino") and model.get("ort_provider") in (
        None,
        "cpu",
    )


def features_dir(state_dir: Path, output: str) -> Path:
    """Where the engine keeps one output's committed shards (named by a hash: any label)."""
    return state_dir / "features" / hashlib.sha256(output.encode()).hexdigest()[:16]


def shard_file(state_dir: Path, output: str, shard: int) -> Path:
    return features_dir(state_dir, output) / f"shard-{shard:05d}.npy"


def marker_file(state_dir: Path, shard: int) -> Path:
    return state_dir / f"shard-{shard:05d}.json"


def read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Record:
    """The latest attempt at one item: its shard and row, or the failure it met there."""

    shard: int
    row: int = -1
    fingerprint: str | None = None
    failure: Failure | None = None

    def current(self, fingerprint: str | None) -> bool:
        """Features that still describe the item's input (a failure is always retried)."""
        return self.failure is None and fingerprint is not None and self.fingerprint == fingerprint


@dataclass(frozen=True)
class LiveView:
    """What a finished pass holds: the live ids in input order, where each row is, the
    failures of current items, and `stale`: ids with features in the state that are no
    longer live (gone from the input, or failed on their latest attempt)."""

    ids: list[str]
    shards: list[int]
    rows: list[int]
    failures: list[Failure]
    stale: list[str]


class ShardStore:
    """The committed state of one extraction pass (one source through one or more models)."""

    def __init__(
        self,
        state_dir: Path,
        fingerprint: dict,
        outputs: Sequence[LayerOutput],
        item_fingerprints: Mapping[str, str | None] | None = None,
    ):
        self.state_dir = state_dir
        self.fingerprint = fingerprint  # what every item's features depend on
        self.outputs = {output.name: output for output in outputs}
        self.item_fingerprints = item_fingerprints or {}  # id -> its input's, now

    def open(self, overwrite: bool) -> None:
        """Refuse output from a different configuration unless `overwrite` (then wipe it);
        `overwrite` always starts clean. Drop what a killed run or damage left behind."""
        state = self.state_dir / STATE_FILE
        saved = read_json(state)
        saved = saved if isinstance(saved, dict) else {}
        if overwrite:
            self.wipe(saved.get("outputs", []))
        elif saved.get("version") != STATE_VERSION:
            self.reset()  # no state, or one this version cannot read: everything is redone
        elif runtime_free(saved.get("fingerprint")) != runtime_free(self.fingerprint):
            raise ConfigError(
                f"{self.state_dir} holds output of a different configuration "
                f"(model, export, preprocessing, decoding or precision changed): refusing to "
                f"mix them. Re-run with --overwrite to replace it.\n  before: "
                f"{saved.get('fingerprint')}\n  now:    {self.fingerprint}"
            )
        self.remove_partial_writes()
        self.undo_unfinished_commits()
        self.drop_damaged()
        atomic_json(
            state,
            {
                "version": STATE_VERSION,
                "fingerprint": self.fingerprint,
                "outputs": self.output_dirs(),
            },
        )

    def remove_partial_writes(self) -> None:
        """Temporary files a killed run left behind (written, never renamed into place)."""
        folders = {self.state_dir, *map(Path, self.output_dirs())}
        folders |= {features_dir(self.state_dir, name) for name in self.outputs}
        for folder in folders:
            if folder.is_dir():
                for stale in folder.glob(".*.tmp*"):
                    stale.unlink(missing_ok=True)

    def undo_unfinished_commits(self) -> None:
        """A commit killed before its marker may have written some sinks' files for its
        items: remove them (`finish` writes whatever is still live from the state)."""
        for intent in self.state_dir.glob("intent-*.json"):
            found = read_json(intent)
            ids = found.get("ids", []) if isinstance(found, dict) else []
            for output in self.outputs.values():
                for sink_name, folder in output.folders.items():
                    discard(get_sink(sink_name), folder, ids)
            intent.unlink(missing_ok=True)

    def drop_damaged(self) -> None:
        intact = {marker["shard"] for marker in self.markers()}
        for path in self.state_dir.glob("shard-*.json"):
            if shard_index(path) not in intact:
                path.unlink(missing_ok=True)

    def has_state(self) -> bool:
        return (self.state_dir / STATE_FILE).is_file()

    def output_dirs(self) -> list[str]:
        return [
            str(folder) for output in self.outputs.values() for folder in output.folders.values()
        ]

    def wipe(self, previous_outputs: Sequence[str]) -> None:
        """Remove this pass's state and outputs, and those the previous run recorded."""
        for folder in {*previous_outputs, *self.output_dirs()}:
            shutil.rmtree(folder, ignore_errors=True)
        self.reset()

    def reset(self) -> None:
        """Forget every record (only the state's own files: anything else there is kept)."""
        shutil.rmtree(self.state_dir / "features", ignore_errors=True)
        for pattern in ("shard-*.json", "intent-*.json", STATE_FILE, LIVE_FILE):
            for path in self.state_dir.glob(pattern):
                path.unlink(missing_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def marker(self, shard: int) -> Path:
        return marker_file(self.state_dir, shard)

    def markers(self) -> list[dict]:
        """Every intact marker, by shard index (see `intact`)."""
        paths = sorted(self.state_dir.glob("shard-*.json"), key=shard_index)
        return [m for m in map(self.intact, paths) if m is not None]

    def intact(self, path: Path) -> dict | None:
        """The marker, if it reads whole and every output's features have its rows."""
        marker = read_json(path)
        if not isinstance(marker, dict) or marker.get("shard") != shard_index(path):
            return None
        ids, prints, rows = marker.get("ids"), marker.get("fingerprints"), marker.get("rows")
        if not (isinstance(ids, list) and isinstance(prints, list) and isinstance(rows, dict)):
            return None
        try:
            marker["failures"] = [Failure(**f) for f in marker.get("failures", [])]
        except TypeError:
            return None
        if len(prints) != len(ids):
            return None
        wanted = set(self.outputs) if ids and self.outputs else set(rows)
        if not wanted <= set(rows):
            return None
        for name in wanted:
            count = self.stored_rows(marker, name)
            path = shard_file(self.state_dir, name, marker["shard"])
            if count is None or not features_fit(path, count, rows[name]):
                return None
        return marker

    def stored_rows(self, marker: dict, name: str) -> int | None:
        """Rows `name`'s shard file must have: one per item, or a sequence output's frames
        (the marker's counts: one positive count per item); None when the marker does not
        fit the output."""
        found = marker.get("frames")
        counts = found.get(name) if isinstance(found, dict) else None
        output = self.outputs.get(name)
        sequence = output.sequence if output is not None else counts is not None
        if not sequence:
            return len(marker["ids"]) if counts is None else None
        if not (
            isinstance(counts, list)
            and len(counts) == len(marker["ids"])
            and all(type(count) is int and count > 0 for count in counts)
        ):
            return None
        return sum(counts)

    def records(self, markers: Sequence[dict] | None = None) -> dict[str, Record]:
        """The latest record of every id in the state."""
        latest: dict[str, Record] = {}
        for marker in self.markers() if markers is None else markers:
            shard = marker["shard"]
            for row, (item_id, print_) in enumerate(
                zip(marker["ids"], marker["fingerprints"], strict=True)
            ):
                latest[item_id] = Record(shard, row, print_)
            for failure in marker["failures"]:
                latest[failure.item_id] = Record(shard, failure=failure)
        return latest

    def pending_shards(self, items: Sequence[Item], shard_size: int) -> list[Shard]:
        """New shards, numbered after the last committed one, of the items to (re)compute."""
        markers = self.markers()
        latest = self.records(markers)
        todo = [
            position
            for position, item in enumerate(items)
            if not (
                (record := latest.get(item.item_id)) is not None
                and record.current(self.item_fingerprints.get(item.item_id))
            )
        ]
        first = 1 + max((m["shard"] for m in markers), default=-1)
        return [
            Shard(first + n, tuple(todo[start : start + shard_size]))
            for n, start in enumerate(range(0, len(todo), shard_size))
        ]

    def commit(
        self,
        shard: int,
        ids: Sequence[str],
        features: Mapping[str, np.ndarray],
        failures: Sequence[Failure],
    ) -> None:
        """Write one shard's features and sink files, then its marker (the commit point)."""
        intent = self.state_dir / f"intent-{shard:05d}.json"
        atomic_json(intent, {"ids": list(ids)})
        rows, frames = {}, {}
        for name, array in features.items():
            output = self.outputs[name]
            if output.sequence:  # stored stacked; the sinks get the rows back
                values, frames[name] = pack(array)
                given = unpack(values, frames[name])
            else:
                values = given = array.astype(np.float32)
            atomic_bytes(shard_file(self.state_dir, name, shard), npy_bytes(values))
            rows[name] = list(values.shape)
            for sink_name, folder in output.folders.items():
                get_sink(sink_name).write_shard(folder, ids, output.per_item(given))
        marker = {
            "shard": shard,
            "ids": list(ids),
            "fingerprints": [self.item_fingerprints.get(i) for i in ids],
            "rows": rows,
            "failures": [f.__dict__ for f in failures],
        }
        if frames:  # only then: markers of row outputs stay as they were
            marker["frames"] = frames
        atomic_json(self.marker(shard), marker)
        intent.unlink(missing_ok=True)

    def finish(self, items: Sequence[Item]) -> LiveView:
        """The pass's live rows (recorded for fusion) once every pending shard committed."""
        latest = self.records()
        ids, shards, rows, failures, live = [], [], [], [], set()
        for item in items:
            record = latest.get(item.item_id)
            if record is None:
                continue
            if record.failure is not None:
                failures.append(record.failure)
                continue
            ids.append(item.item_id)
            shards.append(record.shard)
            rows.append(record.row)
            live.add(item.item_id)
        stale = sorted(item_id for item_id in latest if item_id not in live)
        view = LiveView(ids, shards, rows, failures, stale)
        atomic_json(
            self.state_dir / LIVE_FILE,
            {"ids": ids, "shards": shards, "rows": rows, "stale": view.stale},
        )
        return view

    def read_stamps(self) -> FileStamps:
        found = read_json(self.state_dir / STAMPS_FILE)
        return found if isinstance(found, dict) else {}

    def write_stamps(self, stamps: FileStamps) -> None:
        if stamps:
            atomic_json(self.state_dir / STAMPS_FILE, stamps)


def shard_index(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def features_fit(path: Path, count: int, shape: object) -> bool:
    """The shard's features are there, whole (a memory map fails on a short file), float32,
    with `count` rows and the shape its marker recorded."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError):
        return False
    return array.dtype == np.float32 and list(array.shape) == shape and len(array) == count


def live_blocks(
    state_dir: Path, output: str, view: LiveView, sequence: bool = False
) -> Iterator[np.ndarray]:
    """`output`'s live rows in the view's order, a block of rows at a time (float32); for a
    sequence output, blocks of `(T, D)` rows (`core.sequences`, views of the mapped shards).
    An output read as the other kind is refused, never misread."""

    @lru_cache(maxsize=16)
    def shard(index: int) -> np.ndarray:
        return np.load(shard_file(state_dir, output, index), mmap_mode="r")

    @lru_cache(maxsize=16)
    def starts(index: int) -> np.ndarray | None:
        marker = read_json(marker_file(state_dir, index))
        frames = marker.get("frames") if isinstance(marker, dict) else None
        found = frames.get(output) if isinstance(frames, dict) else None
        if (found is not None) != sequence:
            what = "a (T, D) sequence per item" if found is not None else "one row per item"
            raise ConfigError(
                f"{output} in {state_dir} holds {what}; it cannot be read as "
                f"{'sequences' if sequence else 'rows'} (fusion and the compact and parquet "
                "formats need one row per item: pooling mean)"
            )
        return None if found is None else offsets(found)

    shards, rows = np.asarray(view.shards, np.int64), np.asarray(view.rows, np.int64)
    for start in range(0, len(view.ids), BLOCK_ROWS):
        block_shards = shards[start : start + BLOCK_ROWS]
        block_rows = rows[start : start + BLOCK_ROWS]
        if starts(int(block_shards[0])) is not None:  # a sequence output, as `sequence` says
            yield sequence_block(shard, starts, block_shards, block_rows)
            continue
        dim = shard(int(block_shards[0])).shape[1]
        block = np.empty((len(block_shards), dim), dtype=np.float32)
        for index in np.unique(block_shards):
            where = block_shards == index
            block[where] = shard(int(index))[block_rows[where]]
        yield block


def sequence_block(shard, starts, block_shards: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A block of sequence rows: each item's frames, a view of its mapped shard."""
    found = []
    for index, row in zip(block_shards.tolist(), rows.tolist(), strict=True):
        bounds = starts(index)
        found.append(shard(index)[bounds[row] : bounds[row + 1]])
    return sequences(found)


def read_live_view(state_dir: Path) -> LiveView:
    found = read_json(state_dir / LIVE_FILE)
    if not isinstance(found, dict):
        raise ConfigError(f"{state_dir} holds no finished pass ({LIVE_FILE}): run it first")
    return LiveView(found["ids"], found["shards"], found["rows"], [], found["stale"])


def committed_output(state_dir: Path, output: str) -> tuple[LiveView, np.ndarray]:
    """The live view and float32 features of one output of a finished pass."""
    view = read_live_view(state_dir)
    blocks = list(live_blocks(state_dir, output, view))
    if not blocks:
        return view, np.empty((0, 0), dtype=np.float32)
    return view, np.concatenate(blocks)


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
