"""Elliot (sisinflab/elliot, its multimodal loaders): `train.tsv` / `val.tsv` / `test.tsv`
without a header (user, item, rating, timestamp: a fixed-split `data_config`), and one
folder per feature set with `<item>.npy` per item, a 1-D float32 array (`VisualAttribute`,
`TextualAttribute`, `AudioAttribute` list the folder, take the item from the file name and
the dimension from `shape[0]`). Users and items are the integer indices (Ducho-meets-Elliot's
`mapping.py`, done here), mapped back by `users.tsv` / `items.tsv`; `elliot.yml` is the
`data_config` block to paste."""

from __future__ import annotations

from pathlib import Path

from ducho_fast.core.io import atomic_bytes
from ducho_fast.handoff.data import HandoffData
from ducho_fast.handoff.formats import time_of, write_array, write_rows
from ducho_fast.handoff.interactions import TEST, TRAIN, VALID

SPLIT_FILES = {TRAIN: "train.tsv", VALID: "val.tsv", TEST: "test.tsv"}
LOADERS = {
    "image": ("VisualAttribute", "visual_features"),
    "text": ("TextualAttribute", "textual_features"),
    "audio": ("AudioAttribute", "audio_features"),
}


def loader_of(name: str) -> tuple[str, str]:
    return LOADERS.get(name, ("VisualAttribute", "visual_features"))


def data_config(data: HandoffData, folder: Path) -> str:
    lines = [
        "# Elliot data_config written by `ducho-fast handoff`",
        "data_config:",
        "  strategy: fixed",
        f"  train_path: {folder / SPLIT_FILES[TRAIN]}",
        f"  validation_path: {folder / SPLIT_FILES[VALID]}",
        f"  test_path: {folder / SPLIT_FILES[TEST]}",
        "  side_information:",
    ]
    for block in data.features:
        loader, key = loader_of(block.name)
        lines += [
            f"    - dataloader: {loader}",
            f"      {key}: {folder / features_dir(block.name)}",
        ]
    return "\n".join(lines) + "\n"


def features_dir(name: str) -> str:
    return f"{name}_features"


class ElliotFormat:
    name = "elliot"

    def write(self, data: HandoffData, folder: Path) -> list[Path]:
        files = []
        for label, file in SPLIT_FILES.items():
            rows = (
                [int(data.user_index[r]), int(data.item_index[r]), 1, time_of(data, r)]
                for r in data.rows_in(label)
            )
            files.append(write_rows(folder / file, rows))
        for block in data.features:
            where = folder / features_dir(block.name)
            where.mkdir(parents=True, exist_ok=True)
            for k, row in enumerate(block.rows):
                write_array(where / f"{k}.npy", row)
            files.append(where)
        files.append(write_rows(folder / "items.tsv", enumerate(data.items), ["index", "id"]))
        files.append(write_rows(folder / "users.tsv", enumerate(data.users), ["index", "id"]))
        config = folder / "elliot.yml"
        atomic_bytes(config, data_config(data, folder.resolve()).encode())
        return [*files, config]
