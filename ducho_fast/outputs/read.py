"""Find the outputs under a folder and read one back as ids + float32 rows + its record.

Three layouts: compact (`features.npy`, `ids.txt`, `manifest.json`), parquet
(`features.parquet`, the same record in its metadata) and Ducho's (one `<id>.npy` per item,
no record). Compact and parquet of one output share a folder and hold the same values: the
folder is one output, read from the compact arrays.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ducho_fast.core.errors import ConfigError, InputError
from ducho_fast.engine.sinks.parquet import FILE as PARQUET_FILE
from ducho_fast.engine.sinks.parquet import read_parquet
from ducho_fast.engine.state import STATE_FILE, STATE_HOME, read_json

FAST_FILES = {"compact": "features.npy", "parquet": PARQUET_FILE}


@dataclass(frozen=True)
class FeatureSet:
    """One output: its folder, layout, ids in row order, `(N, D)` float32 rows, and the run's
    record of it (the compact manifest or the parquet metadata; empty for Ducho's layout)."""

    folder: Path
    kind: str  # compact | parquet | ducho
    ids: tuple[str, ...]
    features: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1]) if self.features.ndim == 2 else 0

    def modality(self) -> str | None:
        """The modality the run recorded (image, text, audio), if it did."""
        models = (self.meta.get("fingerprint") or {}).get("models") or [{}]
        return models[0].get("modality")


def layouts_of(folder: Path) -> list[str]:
    """The layouts `folder` holds as an output (compact and parquet share a folder)."""
    found = [kind for kind, file in FAST_FILES.items() if (folder / file).is_file()]
    if found:
        return found
    return ["ducho"] if any(p.suffix == ".npy" for p in folder.iterdir() if p.is_file()) else []


def find_outputs(root: Path) -> list[tuple[Path, str]]:
    """Every output under `root` (itself included) as (folder, layout), sorted; hidden
    folders (the pass state in `.ducho-fast`) are not outputs."""
    if not root.is_dir():
        raise InputError(f"{root} is not a folder; give the output folder of a run")
    found = []
    for folder in sorted([root, *(p for p in root.rglob("*") if p.is_dir())]):
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        found += [(folder, kind) for kind in layouts_of(folder)]
    return found


def read_output(folder: Path, kind: str) -> FeatureSet:
    """One output folder back as a FeatureSet (feature maps flattened to rows)."""
    if kind == "compact":
        ids = tuple((folder / "ids.txt").read_text().splitlines())
        rows = np.load(folder / "features.npy").astype(np.float32, copy=False)
        manifest = folder / "manifest.json"
        meta = json.loads(manifest.read_text()) if manifest.is_file() else {}
        flat = rows.reshape(len(rows), -1) if rows.size else rows.reshape(len(rows), 0)
        return checked(FeatureSet(folder, kind, ids, flat, meta))
    if kind == "parquet":
        ids, rows, meta = read_parquet(folder / PARQUET_FILE)
        return checked(FeatureSet(folder, kind, tuple(ids), rows, meta))
    files = sorted(p for p in folder.glob("*.npy"))
    arrays = [np.load(p).astype(np.float32, copy=False) for p in files]
    sequences = [p.name for p, a in zip(files, arrays, strict=True) if a.ndim == 3]
    if sequences:  # (1, T, D): never flattened into a T*D "vector" of frames
        raise InputError(
            f"{folder}: {sequences[0]} holds a (1, T, D) frame sequence (audio pooling: "
            "none), not one vector per item; extract the model with pooling: mean"
        )
    rows = [a.reshape(-1) for a in arrays]
    dims = {len(r) for r in rows}
    if len(dims) > 1:
        raise InputError(f"{folder}: the .npy files have different sizes {sorted(dims)}")
    stack = np.stack(rows) if rows else np.empty((0, 0), np.float32)
    recorded = state_fingerprints(folder.resolve()).get(folder.resolve())
    meta = {} if recorded is None else {"fingerprint": recorded}
    return FeatureSet(folder, kind, tuple(p.stem for p in files), stack, meta)


def state_fingerprints(folder: Path) -> dict[Path, object]:
    """Output folder -> the fingerprint of the pass that wrote it, from the pass states of
    `folder` and its parents (Ducho's layout keeps no record beside its files; its pass state
    is in `<output_path>/.ducho-fast/state/`, which names the folders it wrote)."""
    found: dict[Path, object] = {}
    for base in (folder, *folder.parents):
        for run in sorted((base / STATE_HOME).glob(f"*/{STATE_FILE}")):
            saved = read_json(run)
            for output in saved.get("outputs", []) if isinstance(saved, dict) else []:
                found.setdefault(Path(output).resolve(), saved.get("fingerprint"))
    return found


def checked(features: FeatureSet) -> FeatureSet:
    if len(features.ids) != len(features.features):
        raise InputError(
            f"{features.folder}: {len(features.ids)} ids for {len(features.features)} rows; "
            "the output is damaged: rerun the extraction"
        )
    return features


def load_features(path: Path) -> FeatureSet:
    """The one output at `path` (an output folder, a file in it, or a run's folder holding
    one output). A run's folder with both layouts of one output (output_format both) gives
    the compact one; several different outputs is an error that lists them."""
    path = path.parent if path.is_file() else path
    found = find_outputs(path)
    fast = {f: k for f, k in reversed(found) if k != "ducho"}  # compact where both are
    picked = list(fast.items()) or found
    if len(picked) != 1:
        listed = ", ".join(str(f) for f, _ in picked) or "none"
        raise ConfigError(
            f"{path} holds {len(picked)} outputs ({listed}); give the folder of one of them"
        )
    chosen = read_output(*picked[0])
    if chosen.kind == "compact" and "parquet" in layouts_of(chosen.folder):
        check_same(chosen, read_output(chosen.folder, "parquet"))
    return chosen


def check_same(compact: FeatureSet, parquet: FeatureSet) -> None:
    """Compact and parquet share a folder; a run with only one of them leaves the other as
    an earlier run wrote it. Reading the stale one would hand off old features: refuse."""
    same = compact.ids == parquet.ids and np.array_equal(compact.features, parquet.features)
    if not same:
        raise InputError(
            f"{compact.folder}: features.npy and features.parquet differ (one is left from an "
            "earlier run with another output_format): delete the stale one, or rerun with "
            "--output-format compact,parquet"
        )


def delimiter_of(path: Path, head: str) -> str:
    """A table's delimiter: by suffix (.tsv, .inter, .csv), else sniffed from its head."""
    if path.suffix in (".tsv", ".inter", ".tab"):
        return "\t"
    if path.suffix == ".csv":
        return ","
    try:
        return csv.Sniffer().sniff(head, delimiters="\t,;|").delimiter
    except csv.Error:
        return "\t"


def read_column(path: Path, id_column: str, column: str) -> dict[str, str]:
    """id -> value of one column of a CSV/TSV with a header (a user's item table)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    rows = csv.DictReader(text.splitlines(), delimiter=delimiter_of(path, text[:4096]))
    for wanted in (id_column, column):
        if wanted not in (rows.fieldnames or []):
            raise ConfigError(f"{path}: no column {wanted!r}; its columns are {rows.fieldnames}")
    return {row[id_column]: row[column] for row in rows}
