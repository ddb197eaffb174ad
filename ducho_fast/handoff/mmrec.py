"""MMRec (enoche/MMRec): `<name>.inter`, tab-separated with `userID`, `itemID`, [`timestamp`]
and `x_label` (0 train, 1 validation, 2 test: `RecDataset.split`); `image_feat.npy` /
`text_feat.npy` (other sets `<name>_feat.npy`) with row `k` the features of `itemID` k (the
trainer loads them with `np.load` and `item_num = max(itemID) + 1`); `i_id_mapping.csv` /
`u_id_mapping.csv` (tab-separated, original id -> integer, as MMRec's preprocessing writes
them); and `<name>.yaml`, the dataset config to copy into MMRec's `src/configs/dataset/`."""

from __future__ import annotations

from pathlib import Path

from ducho_fast.core.io import atomic_bytes
from ducho_fast.handoff.data import HandoffData
from ducho_fast.handoff.formats import time_of, write_array, write_rows

FEATURE_FILES = {"image": "image_feat.npy", "text": "text_feat.npy"}


def feature_file(name: str) -> str:
    return FEATURE_FILES.get(name, f"{name}_feat.npy")


def dataset_config(data: HandoffData, inter: str) -> str:
    lines = [
        "# MMRec dataset config written by `ducho-fast handoff` (src/configs/dataset/)",
        "USER_ID_FIELD: userID",
        "ITEM_ID_FIELD: itemID",
        *(["TIME_FIELD: timestamp"] if data.times is not None else []),
        f"inter_file_name: '{inter}'",
        *(
            f"{'vision' if b.name == 'image' else b.name}_feature_file: '{feature_file(b.name)}'"
            for b in data.features
        ),
        'field_separator: "\\t"',
    ]
    return "\n".join(lines) + "\n"


class MMRecFormat:
    name = "mmrec"

    def write(self, data: HandoffData, folder: Path) -> list[Path]:
        dataset = folder.name
        timed = data.times is not None
        header = ["userID", "itemID", *(["timestamp"] if timed else []), "x_label"]
        rows = (
            [int(u), int(i), *([time_of(data, r)] if timed else []), int(s)]
            for r, (u, i, s) in enumerate(
                zip(data.user_index, data.item_index, data.split, strict=True)
            )
        )
        files = [write_rows(folder / f"{dataset}.inter", rows, header)]
        files.append(
            write_rows(folder / "i_id_mapping.csv", map_rows(data.items), ["id", "itemID"])
        )
        files.append(
            write_rows(folder / "u_id_mapping.csv", map_rows(data.users), ["id", "userID"])
        )
        files += [write_array(folder / feature_file(b.name), b.rows) for b in data.features]
        config = folder / f"{dataset}.yaml"
        atomic_bytes(config, dataset_config(data, f"{dataset}.inter").encode())
        return [*files, config]


def map_rows(ids: tuple[str, ...]):
    return ([original, index] for index, original in enumerate(ids))
