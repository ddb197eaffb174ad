"""`handoff`: real extraction outputs + interactions -> MMRec, Elliot and Cornac layouts.

Cornac installs here, so its own loaders read the hand-off; MMRec and Elliot do not (MMRec
needs lmdb and a CUDA-era torch stack, Elliot pins TensorFlow 2.x): their files are checked
against what their loaders do (`RecDataset.load_inter_graph` / the trainer's `np.load`;
`VisualAttribute` / `TextualAttribute` listing `<item>.npy` files)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.cli import main
from ducho_fast.core.errors import ConfigError, InputError
from ducho_fast.handoff import FeatureSource, HandoffOptions, handoff
from ducho_fast.handoff.interactions import TEST, TRAIN, VALID, split_rows
from ducho_fast.outputs import find_outputs, load_features, read_output

pd = pytest.importorskip("pandas")

ITEMS = [f"i{k}" for k in range(12)]
COLOURS = ("red", "blue", "green", "pink")
TEXTS = [f"item number {k} is a {COLOURS[k % 4]} thing" for k in range(len(ITEMS))]


@pytest.fixture(scope="module")
def outputs(tiny_st, tmp_path_factory) -> Path:
    """Real outputs in every layout: items i0..i11 (i11 has features, no interactions)."""
    root = tmp_path_factory.mktemp("handoff")
    table = root / "items.tsv"
    table.write_text(
        "id\ttext\n" + "".join(f"{i}\t{t}\n" for i, t in zip(ITEMS, TEXTS, strict=True))
    )
    options = RunOptions(progress=False, output_format="ducho,compact,parquet", runtime="torch")
    extract_single(SingleModelJob(str(tiny_st), root / "out", texts=table, batch_size=4), options)
    return root / "out"


@pytest.fixture(scope="module")
def interactions(tmp_path_factory) -> Path:
    """Five users, items i0..i10 plus `ghost` (no features); times increase per row."""
    rng = np.random.default_rng(3)
    rows = [("user", "item", "when")]
    t = 1000
    for user in range(5):
        for item in rng.choice(11, size=8, replace=False):
            rows.append((f"u{user}", f"i{item}", str(t)))
            t += 7
    rows += [("u0", "ghost", str(t)), ("u3", "ghost", str(t + 1))]
    path = tmp_path_factory.mktemp("inter") / "interactions.csv"
    path.write_text("".join(",".join(r) + "\n" for r in rows))
    return path


def options(outputs: Path, interactions: Path, folder: Path, fmt: str, **more) -> HandoffOptions:
    compact = next(f for f, kind in find_outputs(outputs) if kind == "compact")
    return HandoffOptions(
        features=(FeatureSource(compact),),
        interactions=interactions,
        user_column="user",
        item_column="item",
        time_column="when",
        output=folder,
        format=fmt,
        **more,
    )


def reference(outputs: Path) -> dict[str, np.ndarray]:
    compact = next(f for f, kind in find_outputs(outputs) if kind == "compact")
    ids = (compact / "ids.txt").read_text().split()
    return dict(zip(ids, np.load(compact / "features.npy"), strict=True))


def test_every_layout_reads_back_the_same_features(outputs):
    found = {kind: read_output(folder, kind) for folder, kind in find_outputs(outputs)}
    assert set(found) == {"compact", "parquet", "ducho"}
    for kind in ("parquet", "ducho"):
        assert sorted(found[kind].ids) == sorted(found["compact"].ids)
        order = [found[kind].ids.index(i) for i in found["compact"].ids]
        np.testing.assert_array_equal(found[kind].features[order], found["compact"].features)
    assert load_features(outputs).kind == "compact"  # both layouts of one output: compact


def test_mmrec_layout_as_its_loader_reads_it(outputs, interactions, tmp_path):
    report = handoff(options(outputs, interactions, tmp_path / "ml", "mmrec"))
    folder = tmp_path / "ml"
    inter = pd.read_csv(folder / "ml.inter", usecols=["userID", "itemID", "x_label"], sep="\t")
    assert set(inter["x_label"]) == {TRAIN, VALID, TEST}
    item_num = int(inter["itemID"].max()) + 1  # MMRec's RecDataset
    features = np.load(folder / "text_feat.npy", allow_pickle=True)
    assert features.shape == (item_num, 32) == (report.items, 32)
    mapping = pd.read_csv(folder / "i_id_mapping.csv", sep="\t")
    want = reference(outputs)
    for original, index in zip(mapping["id"], mapping["itemID"], strict=True):
        np.testing.assert_array_equal(features[index], want[original])
    users = pd.read_csv(folder / "u_id_mapping.csv", sep="\t")
    assert sorted(users["userID"]) == list(range(5)) and len(inter) == 40
    config = (folder / "ml.yaml").read_text()
    assert (
        "inter_file_name: 'ml.inter'" in config and "text_feature_file: 'text_feat.npy'" in config
    )


def test_elliot_layout_as_its_loaders_read_it(outputs, interactions, tmp_path):
    handoff(options(outputs, interactions, tmp_path / "el", "elliot"))
    folder = tmp_path / "el"
    parts = [
        pd.read_csv(folder / f, sep="\t", header=None, names=["u", "i", "r", "t"])
        for f in ("train.tsv", "val.tsv", "test.tsv")
    ]
    assert sum(len(p) for p in parts) == 40 and all(len(p) for p in parts)
    files = sorted((folder / "text_features").iterdir())
    in_folder = {f.name.split(".")[0] for f in files}  # TextualAttribute.check_items_in_folder
    assert {str(i) for p in parts for i in p["i"]} == in_folder
    assert np.load(files[0]).shape == (32,)  # its dimension is shape[0]
    items = pd.read_csv(folder / "items.tsv", sep="\t")
    want = reference(outputs)
    for index, original in zip(items["index"], items["id"], strict=True):
        np.testing.assert_array_equal(
            np.load(folder / "text_features" / f"{index}.npy"), want[original]
        )
    assert "TextualAttribute" in (folder / "elliot.yml").read_text()


def test_cornac_loads_it_with_its_own_reader_and_modality(outputs, interactions, tmp_path):
    cornac = pytest.importorskip("cornac", reason="pip install cornac")
    handoff(options(outputs, interactions, tmp_path / "co", "cornac"))
    folder = tmp_path / "co"
    reader = cornac.data.Reader()
    train, val, test = (
        reader.read(folder / f, fmt="UIRT") for f in ("train.txt", "val.txt", "test.txt")
    )
    ids = (folder / "item_ids.txt").read_text().split()
    image = cornac.data.ImageModality(features=np.load(folder / "text_features.npy"), ids=ids)
    method = cornac.eval_methods.BaseMethod.from_splits(
        train_data=train, test_data=test, val_data=val, item_image=image, exclude_unknowns=True
    )
    want = reference(outputs)
    loaded = method.train_set.item_image.features
    for item, index in method.train_set.iid_map.items():
        np.testing.assert_allclose(loaded[index], want[item])


def test_items_without_features_and_features_without_items_are_listed(
    outputs, interactions, tmp_path
):
    report = handoff(options(outputs, interactions, tmp_path / "m", "mmrec"))
    assert (report.missing_items, report.dropped_interactions) == (1, 2)
    missing = list(csv.DictReader((tmp_path / "m" / "missing-features.tsv").open(), delimiter="\t"))
    assert [(r["id"], r["interactions"], r["missing_in"]) for r in missing] == [
        ("ghost", "2", "text")
    ]
    unused = list(csv.DictReader((tmp_path / "m" / "unused-features.tsv").open(), delimiter="\t"))
    assert [r["id"] for r in unused] == ["i11"] and report.unused_items == 1
    saved = json.loads((tmp_path / "m" / "handoff.json").read_text())
    assert saved["missing_features"]["interactions_left_out"] == 2
    assert "ghost" not in (tmp_path / "m" / "i_id_mapping.csv").read_text()
    with pytest.raises(InputError, match="--strict: 1 items"):
        handoff(options(outputs, interactions, tmp_path / "s", "mmrec", strict=True))


def test_chronological_split_per_user():
    users = np.array([0] * 10 + [1] * 3 + [2])
    times = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 5, 6, 4, 1], float)
    labels = split_rows(users, times, (0.8, 0.1, 0.1))
    first = labels[:10]
    assert list(first[np.argsort(times[:10])]) == [TRAIN] * 8 + [VALID, TEST]
    assert list(labels[10:13]) == [VALID, TEST, TRAIN]  # 3 rows: one of each, by time
    assert labels[13] == TRAIN  # a single interaction stays in train
    two = split_rows(np.array([0, 0]), np.array([2.0, 1.0]))
    assert list(two) == [TEST, TRAIN]


def test_seeded_split_is_repeatable_and_keeps_the_counts():
    users = np.repeat(np.arange(20), 10)
    a, b = split_rows(users, None, seed=1), split_rows(users, None, seed=1)
    c = split_rows(users, None, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    for labels in (a, c):
        per_user = labels.reshape(20, 10)
        assert ((per_user == TEST).sum(1) == 1).all() and ((per_user == VALID).sum(1) == 1).all()


def test_user_features_are_train_means_optionally_decayed(outputs, interactions, tmp_path):
    plain = handoff(options(outputs, interactions, tmp_path / "a", "mmrec", users=True))
    folder = plain.folder
    inter = pd.read_csv(folder / "a.inter", sep="\t")
    items = pd.read_csv(folder / "i_id_mapping.csv", sep="\t")["id"].tolist()
    want = reference(outputs)
    means = np.load(folder / "user_features" / "text.npy")
    train = inter[inter["x_label"] == TRAIN]
    for user, rows in train.groupby("userID"):
        expected = np.mean([want[items[i]] for i in rows["itemID"]], axis=0)
        np.testing.assert_allclose(means[user], expected, rtol=1e-5, atol=1e-6)
    decayed = handoff(
        options(outputs, interactions, tmp_path / "b", "mmrec", users=True, half_life=7)
    )
    rows = train[train["userID"] == 0].sort_values("timestamp")
    weights = 0.5 ** ((rows["timestamp"].max() - rows["timestamp"]) / 7)
    vectors = np.stack([want[items[i]] for i in rows["itemID"]])
    expected = (vectors * weights.to_numpy()[:, None]).sum(0) / weights.sum()
    got = np.load(decayed.folder / "user_features" / "text.npy")[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, means[0])


def test_feature_sets_need_distinct_names(outputs, interactions, tmp_path):
    compact = next(f for f, kind in find_outputs(outputs) if kind == "compact")
    ducho = next(f for f, kind in find_outputs(outputs) if kind == "ducho")
    twice = options(outputs, interactions, tmp_path / "x", "mmrec")
    both = (FeatureSource(compact), FeatureSource(ducho, "text"))
    with pytest.raises(ConfigError, match="name them: --features NAME=DIR"):
        handoff(HandoffOptions(**{**twice.__dict__, "features": both}))
    named = (FeatureSource(compact), FeatureSource.parse(f"image={ducho}"))
    report = handoff(HandoffOptions(**{**twice.__dict__, "features": named}))
    assert np.array_equal(
        np.load(report.folder / "image_feat.npy"), np.load(report.folder / "text_feat.npy")
    )


def test_cli_handoff(outputs, interactions, tmp_path):
    args = ["handoff", "--features", str(outputs), "--interactions", str(interactions)]
    args += ["--user-column", "user", "--item-column", "item", "--format", "cornac"]
    result = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "5 users, 11 items" in result.output and "missing-features.tsv" in result.output
    bad = CliRunner().invoke(main, [*args, "--output", str(tmp_path / "d"), "--format", "lenskit"])
    assert bad.exit_code == 1 and "unknown hand-off format 'lenskit'" in bad.output


@pytest.mark.parametrize("value", ["", "nan", "inf", "NaT"])
def test_blank_or_non_finite_times_are_errors_naming_the_line(value, tmp_path):
    """A blank time parsed as NaT sorted first (into train) and a NaN one poisoned decayed
    user means; both now stop with the file and line."""
    from ducho_fast.handoff.interactions import parse_time

    with pytest.raises(InputError, match=r"line 7: time"):
        parse_time(value, tmp_path / "x.csv", 7)
    assert parse_time("2026-12-02T00:00:00", tmp_path / "x.csv", 1) == 1796169600.0


def test_a_stale_parquet_beside_compact_is_refused(outputs, tmp_path):
    """compact and parquet share a folder: a rerun writing only one leaves the other stale,
    and handing off the stale one would be silently wrong."""
    import shutil

    compact = next(f for f, kind in find_outputs(outputs) if kind == "compact")
    copy = tmp_path / "copy"
    shutil.copytree(compact, copy)
    load_features(copy)  # equal: fine
    rows = np.load(copy / "features.npy")
    np.save(copy / "features.npy", rows[::-1].copy())
    (copy / "ids.txt").write_text("\n".join(reversed((copy / "ids.txt").read_text().split())))
    with pytest.raises(InputError, match=r"features\.npy and features\.parquet differ"):
        load_features(copy)


def test_an_output_where_every_item_failed_reads_as_empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    np.save(folder / "features.npy", np.zeros((0, 0), np.float32))
    (folder / "ids.txt").write_text("")
    assert read_output(folder, "compact").features.shape == (0, 0)
