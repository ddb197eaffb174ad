"""Reruns: exactly the items whose input changed are recomputed, failures are retried, the
state lives with (and is checked against) the output, and an edited artifact manifest is refused.

Each test runs real extractions with the tiny models on real files, edits the input the way a
user would, reruns, and compares with a fresh run on the edited input (sequential, so a
pipelined rerun is also checked against sequential output)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ducho_fast.api import RunOptions, SingleModelJob, extract_config, extract_single
from ducho_fast.artifact.manifest import read_manifest
from ducho_fast.core.errors import ArtifactError, ConfigError
from ducho_fast.engine import fingerprint
from ducho_fast.engine.fingerprint import hash_file
from ducho_fast.engine.state import read_failures
from ducho_fast.modalities.image import synthetic_images

FAST = RunOptions(progress=False, shard_size=2, workers=0, output_format="both")
FRESH = RunOptions(
    progress=False, shard_size=4, workers=0, output_format="both", pipelined=False
)  # the reference: a fresh sequential run on the edited input


@pytest.fixture
def photos(tmp_path) -> Path:
    """Six photo-like JPEGs p0..p5 that a test may edit."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, pixels in enumerate(synthetic_images(6, (90, 120), seed=5)):
        Image.fromarray(pixels).save(folder / f"p{index}.jpg", quality=92)
    return folder


def other_jpeg(path: Path, seed: int = 11) -> None:
    """Replace `path` with a different photo."""
    (pixels,) = synthetic_images(1, (90, 120), seed=seed)
    Image.fromarray(pixels).save(path, quality=92)


def images(model: Path, folder: Path, out: Path, options: RunOptions = FAST):
    job = SingleModelJob(str(model), out, images=folder, batch_size=2)
    (result,) = extract_single(job, options)
    return result


def texts(model: Path, table: Path, out: Path, options: RunOptions = FAST, column="text"):
    job = SingleModelJob(str(model), out, texts=table, text_column=column, batch_size=2)
    (result,) = extract_single(job, options)
    return result


def compact(out: Path, model: Path, layer: str) -> dict[str, np.ndarray]:
    folder = out / model.name / layer
    ids = (folder / "ids.txt").read_text().splitlines()
    return dict(zip(ids, np.load(folder / "features.npy"), strict=True))


def ducho_files(out: Path, model: Path, layer: str) -> dict[str, np.ndarray]:
    folder = out / "ducho" / model.name / layer
    return {p.stem: np.load(p)[0] for p in sorted(folder.glob("*.npy"))}


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], atol=1e-5, err_msg=key)


def write_table(path: Path, rows: dict[str, str], extra: dict[str, str] | None = None) -> Path:
    header = "id\ttext" + ("\ttitle" if extra else "")
    lines = [header]
    for key, text in rows.items():
        lines.append(f"{key}\t{text}" + (f"\t{extra[key]}" if extra else ""))
    path.write_text("\n".join(lines) + "\n")
    return path


TEXTS = {
    "a1": "a red cotton shirt",
    "a2": "blue denim jeans, slim fit",
    "a3": "soft wool jumper (grey)",
    "a4": "black leather boots",
    "a5": "white linen dress",
    "a6": "green rain jacket",
}


# --- 1. per-item content fingerprints ---------------------------------------------------------


def test_edited_texts_are_recomputed_and_only_they(tiny_clip, tmp_path):
    table = write_table(tmp_path / "items.tsv", TEXTS)
    out = tmp_path / "out"
    texts(tiny_clip, table, out)
    before = compact(out, tiny_clip, "text_embeds")

    edited = {**TEXTS, "a2": "a yellow summer hat", "a5": "striped swimming trunks"}
    write_table(table, edited)
    result = texts(tiny_clip, table, out)
    assert result.metrics["items"] == 2  # exactly the two edited rows
    after = compact(out, tiny_clip, "text_embeds")
    for key in ("a1", "a3", "a4", "a6"):
        np.testing.assert_array_equal(after[key], before[key])  # kept, not recomputed
    for key in ("a2", "a5"):
        assert np.abs(after[key] - before[key]).max() > 1e-3

    fresh = tmp_path / "fresh"
    texts(tiny_clip, write_table(tmp_path / "fresh.tsv", edited), fresh, FRESH)
    assert_same(after, compact(fresh, tiny_clip, "text_embeds"))
    assert_same(
        ducho_files(out, tiny_clip, "text_embeds"), compact(fresh, tiny_clip, "text_embeds")
    )


def test_switching_the_text_column_recomputes(tiny_clip, tmp_path):
    titles = {key: f"title of {key}" for key in TEXTS}
    table = write_table(tmp_path / "items.tsv", TEXTS, titles)
    out = tmp_path / "out"
    texts(tiny_clip, table, out)
    result = texts(tiny_clip, table, out, column="title")
    assert result.metrics["items"] == len(TEXTS)
    fresh = tmp_path / "fresh"
    texts(tiny_clip, table, fresh, FRESH, column="title")
    assert_same(compact(out, tiny_clip, "text_embeds"), compact(fresh, tiny_clip, "text_embeds"))


def text_config(dataset: Path, model: Path, column: str = "text", **entry) -> Path:
    config = {
        "dataset_path": str(dataset),
        "shard_size": 2,
        "workers": 0,
        "textual": {
            "items": {
                "input_path": "items.tsv",
                "item_column": "id",
                "text_column": column,
                "output_path": "text_out",
                "model": [
                    {
                        "model_name": str(model),
                        "backend": "sentence_transformers",
                        "output_layers": 1,
                        "batch_size": 2,
                        **entry,
                    }
                ],
            }
        },
    }
    path = dataset / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def config_outputs(dataset: Path, model: Path, out: str = "text_out") -> dict[str, np.ndarray]:
    folder = dataset / out / "sentence_transformers" / model.name / "1"
    return {p.stem: np.load(p)[0] for p in sorted(folder.glob("*.npy"))}


def test_toggling_clear_text_and_the_column_in_a_config_recomputes(tiny_st, tmp_path):
    rows = {**TEXTS, "a7": "Hello, World! It's 5 o'clock"}
    quiet = RunOptions(progress=False)
    dataset = tmp_path / "data"
    dataset.mkdir()
    write_table(dataset / "items.tsv", rows, {k: f"{k} it's 3 o'clock" for k in rows})
    path = text_config(dataset, tiny_st)
    extract_config(path, options=quiet)
    (result,) = extract_config(path, ["--textual.items.model.0.clear_text=true"], options=quiet)
    assert result.metrics["items"] == 3  # the rows clear_text changes: ',' '(' and '!'
    (result,) = extract_config(
        path,
        ["--textual.items.model.0.clear_text=true", "--textual.items.text_column=title"],
        options=quiet,
    )
    assert result.metrics["items"] == len(rows)

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(dataset / "items.tsv", fresh / "items.tsv")
    extract_config(text_config(fresh, tiny_st, "title", clear_text=True), options=quiet)
    assert_same(config_outputs(dataset, tiny_st), config_outputs(fresh, tiny_st))


def test_replaced_new_and_removed_images(tiny_clip, photos, tmp_path):
    out = tmp_path / "out"
    images(tiny_clip, photos, out)
    before = compact(out, tiny_clip, "image_embeds")

    other_jpeg(photos / "p2.jpg")  # replaced: same name, other pixels
    (photos / "p4.jpg").unlink()  # gone from the input
    other_jpeg(photos / "p9.jpg", seed=12)  # new to the input
    result = images(tiny_clip, photos, out)  # pipelined rerun
    assert result.metrics["items"] == 2
    after = compact(out, tiny_clip, "image_embeds")
    assert list(after) == ["p0", "p1", "p2", "p3", "p5", "p9"]
    for key in ("p0", "p1", "p3", "p5"):
        np.testing.assert_array_equal(after[key], before[key])
    assert np.abs(after["p2"] - before["p2"]).max() > 1e-3
    # Ducho's layout: the gone item's file, written by an earlier run, is removed.
    assert list(ducho_files(out, tiny_clip, "image_embeds")) == list(after)

    fresh = tmp_path / "fresh"
    images(tiny_clip, photos, fresh, FRESH)
    assert_same(after, compact(fresh, tiny_clip, "image_embeds"))
    assert_same(ducho_files(out, tiny_clip, "image_embeds"), after)


@pytest.fixture
def trusted_stamps(monkeypatch) -> list[str]:
    """Stamps trusted at once (files made by a test are younger than the 2 s margin); the
    list collects every file hashed."""
    hashed: list[str] = []

    def counting(path: str) -> str:
        hashed.append(Path(path).name)
        return hash_file(path)

    monkeypatch.setattr(fingerprint, "RACY_NS", 0)
    monkeypatch.setattr(fingerprint, "hash_file", counting)
    return hashed


def test_a_touched_but_unchanged_image_is_not_recomputed(
    tiny_clip, photos, tmp_path, trusted_stamps
):
    out = tmp_path / "out"
    images(tiny_clip, photos, out)
    assert len(trusted_stamps) == 6
    later = time.time_ns() + 5_000_000_000
    os.utime(photos / "p1.jpg", ns=(later, later))  # new stat, same bytes
    data = (photos / "p3.jpg").read_bytes()
    (photos / "p3.jpg").unlink()
    (photos / "p3.jpg").write_bytes(data)  # a new inode, same bytes
    trusted_stamps.clear()
    assert images(tiny_clip, photos, out).metrics["items"] == 0
    assert sorted(trusted_stamps) == ["p1.jpg", "p3.jpg"]  # the others: their stat vouched


def test_a_same_size_rewrite_keeping_the_mtime_is_recomputed(
    tiny_clip, photos, tmp_path, trusted_stamps
):
    """`cp -p`, rsync -t and `touch -d` restore an mtime: the stat that spares re-hashing
    includes the ctime, which no tool can set."""
    out = tmp_path / "out"
    images(tiny_clip, photos, out)
    target = photos / "p1.jpg"
    info = target.stat()
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF  # same size, other bytes (inside the entropy-coded data)
    with target.open("r+b") as handle:  # in place: same inode
        handle.write(bytes(data))
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert target.stat().st_size == info.st_size and target.stat().st_ino == info.st_ino
    assert images(tiny_clip, photos, out).metrics["items"] == 1


def test_overwrite_recomputes_everything(tiny_clip, photos, tmp_path):
    out = tmp_path / "out"
    images(tiny_clip, photos, out)
    again = RunOptions(**{**FAST.__dict__, "overwrite": True})
    assert images(tiny_clip, photos, out, again).metrics["items"] == 6


def test_jpeg_draft_is_part_of_the_pass(tiny_clip, large_photos, tmp_path):
    """Large JPEGs, so the draft gate measures and keeps draft (on small photos, with nothing
    to gate it on, draft is switched off and the pass is the exact one)."""
    folder = tmp_path / "large"
    folder.mkdir()
    for photo in large_photos:
        shutil.copy(photo, folder / photo.name)
    out = tmp_path / "out"
    images(tiny_clip, folder, out)
    drafted = RunOptions(**{**FAST.__dict__, "jpeg_draft": True})
    with pytest.raises(ConfigError, match="different configuration"):
        images(tiny_clip, folder, out, drafted)


def test_an_fp32_pass_keeps_its_output_whichever_runtime_runs_it(tiny_clip, photos, tmp_path):
    """The default runtime is measured per CPU, so another CPU may pick another one: fp32 values
    are the same within the export's gate (max-abs included), so the output is kept."""
    pytest.importorskip("openvino")
    out = tmp_path / "out"

    def on(runtime: str, precision: str = "fp32") -> RunOptions:
        return RunOptions(**{**FAST.__dict__, "runtime": runtime, "precision": precision})

    images(tiny_clip, photos, out, on("onnxruntime"))
    assert images(tiny_clip, photos, out, on("openvino")).metrics["items"] == 0  # all kept
    # reduced precisions write beside it, one output per runtime (`-int8-onnxruntime`, ...)
    assert images(tiny_clip, photos, out, on("openvino", "int8")).metrics["items"] == 6
    assert images(tiny_clip, photos, out, on("onnxruntime", "int8")).metrics["items"] == 6


# --- 2. recorded failures are retried ---------------------------------------------------------


def test_a_fixed_image_is_retried(tiny_clip, photos, tmp_path):
    out = tmp_path / "out"
    (photos / "p7.jpg").write_bytes(b"not a jpeg")
    first = images(tiny_clip, photos, out)
    assert [f.item_id for f in first.failures] == ["p7"]
    images(tiny_clip, photos, out)  # still broken: still recorded
    assert [f.item_id for f in read_failures(out / "failures.tsv")] == ["p7"]

    other_jpeg(photos / "p7.jpg")
    result = images(tiny_clip, photos, out)
    assert result.metrics["items"] == 1 and result.failures == []
    assert read_failures(out / "failures.tsv") == []
    assert "p7" in compact(out, tiny_clip, "image_embeds")
    assert "p7" in ducho_files(out, tiny_clip, "image_embeds")


def test_a_failure_is_retried_though_its_file_is_unchanged(
    tiny_clip, photos, tmp_path, monkeypatch
):
    """A transient failure (a network share that hiccuped): the next run tries again."""
    from ducho_fast.core.image import decode_image
    from ducho_fast.modalities import image as image_modality

    def flaky(path, *args):
        if Path(path).name == "p4.jpg":
            raise OSError("the share went away")
        return decode_image(path, *args)

    out = tmp_path / "out"
    monkeypatch.setattr(image_modality, "decode_image", flaky)  # workers=0: in this process
    assert [f.item_id for f in images(tiny_clip, photos, out).failures] == ["p4"]
    monkeypatch.undo()
    result = images(tiny_clip, photos, out)
    assert result.metrics["items"] == 1 and result.failures == []
    assert "p4" in compact(out, tiny_clip, "image_embeds")


def test_an_image_that_breaks_loses_its_old_features(tiny_clip, photos, tmp_path):
    out = tmp_path / "out"
    images(tiny_clip, photos, out)
    (photos / "p3.jpg").write_bytes(b"broken now")
    result = images(tiny_clip, photos, out)
    assert [f.item_id for f in result.failures] == ["p3"]
    assert "p3" not in compact(out, tiny_clip, "image_embeds")
    assert "p3" not in ducho_files(out, tiny_clip, "image_embeds")


# --- 3. the state lives with the output and is checked ----------------------------------------


def image_config(dataset: Path, model: Path, output_path: str) -> Path:
    config = {
        "dataset_path": str(dataset),
        "shard_size": 2,
        "workers": 0,
        "visual": {
            "items": {
                "input_path": "images",
                "output_path": output_path,
                "model": [
                    {
                        "model_name": str(model),
                        "backend": "transformers",
                        "output_layers": "pooler_output",
                        "batch_size": 2,
                    }
                ],
            }
        },
    }
    path = dataset / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_new_output_path_gets_every_file(tiny_vit, photos, tmp_path):
    dataset = tmp_path / "data"
    dataset.mkdir()
    (dataset / "images").symlink_to(photos)
    quiet = RunOptions(progress=False)
    extract_config(image_config(dataset, tiny_vit, "first"), options=quiet)
    (result,) = extract_config(image_config(dataset, tiny_vit, "second"), options=quiet)
    assert result.succeeded == 6
    layer = Path("transformers", tiny_vit.name, "pooler_output")
    first = sorted(p.name for p in (dataset / "first" / layer).glob("*.npy"))
    assert sorted(p.name for p in (dataset / "second" / layer).glob("*.npy")) == first
    assert len(first) == 6
    shutil.rmtree(dataset / "second" / "transformers")  # the Ducho folders deleted
    extract_config(image_config(dataset, tiny_vit, "second"), options=quiet)
    assert sorted(p.name for p in (dataset / "second" / layer).glob("*.npy")) == first

    (photos / "p4.jpg").unlink()  # gone while the run wrote elsewhere
    extract_config(image_config(dataset, tiny_vit, "second"), options=quiet)
    extract_config(image_config(dataset, tiny_vit, "first"), options=quiet)
    for root in ("first", "second"):
        assert "p4.npy" not in {p.name for p in (dataset / root / layer).glob("*.npy")}


def test_sink_files_of_a_commit_killed_before_its_marker_are_redone(tiny_clip, photos, tmp_path):
    """A later attempt at p1 wrote its Ducho file, then the run died before the marker (and
    the input was put back): the file must not keep that attempt's values."""
    out = tmp_path / "out"
    images(tiny_clip, photos, out)
    (state,) = {path.parent for path in out.rglob("run.json")}
    ducho_file = out / "ducho" / tiny_clip.name / "image_embeds" / "p1.npy"
    np.save(ducho_file, np.zeros_like(np.load(ducho_file)))
    (state / "intent-00099.json").write_text(json.dumps({"ids": ["p1"]}))
    assert images(tiny_clip, photos, out).metrics["items"] == 0
    assert_same(
        ducho_files(out, tiny_clip, "image_embeds"), compact(out, tiny_clip, "image_embeds")
    )


def test_fusion_drops_an_item_gone_from_one_input(tiny_clip, photos, tmp_path):
    dataset = tmp_path / "data"
    dataset.mkdir()
    (dataset / "images").symlink_to(photos)
    rows = {f"p{i}": text for i, text in enumerate(TEXTS.values())}
    write_table(dataset / "items.tsv", rows)
    config = {
        "dataset_path": str(dataset),
        "shard_size": 2,
        "workers": 0,
        "visual_textual": {
            "items": {
                "input_path": {"visual": "images", "textual": "items.tsv"},
                "item_column": "id",
                "text_column": "text",
                "output_path": {"visual": "v", "textual": "t"},
                "model": [
                    {
                        "model_name": str(tiny_clip),
                        "backend": "transformers",
                        "output_layers": 1,
                        "batch_size": 2,
                        "fusion": ["concat"],
                    }
                ],
            }
        },
    }
    path = dataset / "config.yml"
    path.write_text(yaml.safe_dump(config))
    quiet = RunOptions(progress=False)
    extract_config(path, options=quiet)
    fused = dataset / "v_t_concat" / "transformers" / tiny_clip.name / "1"
    assert len(list(fused.glob("*.npy"))) == 6
    write_table(dataset / "items.tsv", {k: v for k, v in rows.items() if k != "p4"})
    extract_config(path, options=quiet)
    assert sorted(p.stem for p in fused.glob("*.npy")) == ["p0", "p1", "p2", "p3", "p5"]
    compact_fused = dataset / "ducho-fast" / "v_t_concat" / "transformers" / tiny_clip.name / "1"
    assert (compact_fused / "ids.txt").read_text().split() == ["p0", "p1", "p2", "p3", "p5"]


@pytest.mark.parametrize("damage", ["features deleted", "features truncated", "marker garbled"])
def test_damaged_state_is_redone(damage, tiny_clip, photos, tmp_path):
    out = tmp_path / "out"
    images(tiny_clip, photos, out)
    before = compact(out, tiny_clip, "image_embeds")
    (state,) = {path.parent for path in out.rglob("run.json")}
    if damage == "features deleted":
        shutil.rmtree(state / "features")
        redone = 6
    elif damage == "features truncated":
        shard = sorted((state / "features").rglob("shard-*.npy"))[1]
        shard.write_bytes(shard.read_bytes()[:-8])
        redone = 2
    else:
        (state / "shard-00002.json").write_text('{"shard": 2, "ids": [')
        redone = 2
    result = images(tiny_clip, photos, out)
    assert result.metrics["items"] == redone and result.succeeded == 6
    assert_same(compact(out, tiny_clip, "image_embeds"), before)


# --- 4. the artifact manifest is covered by the hash check ------------------------------------


def test_an_edited_manifest_is_refused(tiny_clip, photos, tmp_path, monkeypatch):
    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "cache"))
    images(tiny_clip, photos, tmp_path / "out")
    (manifest_path,) = (tmp_path / "cache" / "artifacts").glob("*/manifest.json")
    read_manifest(manifest_path.parent)  # as exported: accepted
    data = json.loads(manifest_path.read_text())
    (graph,) = [g for g in data["graphs"] if g["name"] == "image"]
    graph["preprocess"]["interpolation"] = (
        "nearest" if graph["preprocess"]["interpolation"] != "nearest" else "bilinear"
    )
    manifest_path.write_text(json.dumps(data, indent=2))
    with pytest.raises(ArtifactError, match=r"manifest\.json .*edited"):
        read_manifest(manifest_path.parent)
    with pytest.raises(ArtifactError, match=r"manifest\.json .*edited"):
        images(tiny_clip, photos, tmp_path / "elsewhere")
