"""Cornac (PreferredAI/cornac): `train.txt` / `val.txt` / `test.txt` as `Reader().read(path,
fmt="UIRT")` reads them (tab-separated user, item, rating, timestamp; original ids, which
Cornac maps itself), and per feature set `<name>_features.npy` with `item_ids.txt` naming row
`k`: `ImageModality(features=np.load(...), ids=ids)` (or `TextModality`) takes them as they
are, and `BaseMethod.from_splits(train, test, val, item_image=...)` builds the sets."""

from __future__ import annotations

from pathlib import Path

from ducho_fast.core.io import atomic_bytes
from ducho_fast.handoff.data import HandoffData
from ducho_fast.handoff.formats import time_of, write_array, write_rows
from ducho_fast.handoff.interactions import TEST, TRAIN, VALID

SPLIT_FILES = {TRAIN: "train.txt", VALID: "val.txt", TEST: "test.txt"}


class CornacFormat:
    name = "cornac"

    def write(self, data: HandoffData, folder: Path) -> list[Path]:
        files = []
        for label, file in SPLIT_FILES.items():
            rows = (
                [
                    data.users[data.user_index[r]],
                    data.items[data.item_index[r]],
                    1.0,
                    int(time_of(data, r)),  # its parser reads an integer
                ]
                for r in data.rows_in(label)
            )
            files.append(write_rows(folder / file, rows))
        ids = folder / "item_ids.txt"
        atomic_bytes(ids, ("\n".join(data.items) + "\n").encode())
        files.append(ids)
        files += [write_array(folder / f"{b.name}_features.npy", b.rows) for b in data.features]
        return files
