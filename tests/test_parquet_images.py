"""Parquet tables of encoded images (Hugging Face's `{bytes, path}` layout, or plain binary) as
an image source, on local paths and fsspec URLs: the features of the same images as files,
every unusable row recorded by id and row, the table read a few rows at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from ducho_fast.api import RunOptions, extract_config
from ducho_fast.core import blobs
from ducho_fast.core.errors import ConfigError
from ducho_fast.core.records import Blob
from ducho_fast.engine.image_table import image_table_columns, list_image_rows
from ducho_fast.engine.state import read_failures

pa = pytest.importorskip("pyarrow", reason="pip install ducho-fast[parquet]")
pq = pytest.importorskip("pyarrow.parquet")

QUIET = RunOptions(progress=False)


@pytest.fixture(scope="module")
def photos(product_photos, exif_orientation_images, skimage_photos) -> dict[str, bytes]:
    """Real photos by id: small catalogue JPEGs, EXIF-rotated JPEGs (orientation must come
    from the bytes too), a greyscale and an RGBA image, and a truncated JPEG."""
    chosen = {p.stem: p.read_bytes() for p in product_photos[:4]}
    for name in ("Landscape_6", "Portrait_8"):
        chosen[name] = (exif_orientation_images / f"{name}.jpg").read_bytes()
    for photo in skimage_photos[3:5]:  # L and RGBA
        chosen[photo.stem] = photo.read_bytes()
    chosen["truncated"] = product_photos[5].read_bytes()[:300]
    return chosen


def write_sources(root: Path, photos: dict[str, bytes], binary: bool = False) -> None:
    """`images/<id>.img` files, and `images.parquet` holding the same bytes (Hugging Face's
    struct, or a plain binary column) plus rows no folder can hold: a null cell, a path
    without bytes, empty bytes, a repeated id, a missing id."""
    (root / "images").mkdir(parents=True)
    for item_id, data in photos.items():
        (root / "images" / f"{item_id}.img").write_bytes(data)
    rows = [(i, {"bytes": d, "path": f"{i}.jpg"}) for i, d in photos.items()]
    first = next(iter(photos))
    rows += [
        ("null-cell", None),
        ("path-only", {"bytes": None, "path": "elsewhere/x.jpg"}),
        ("empty", {"bytes": b"", "path": None}),
        (first, {"bytes": photos["truncated"], "path": None}),  # duplicate: first kept
        (None, {"bytes": photos[first], "path": None}),
    ]
    cells = [cell for _, cell in rows]
    kind = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if binary:
        cells, kind = [None if c is None else c["bytes"] for c in cells], pa.binary()
    table = pa.table({"item_id": [r[0] for r in rows], "image": pa.array(cells, kind)})
    pq.write_table(table, root / "images.parquet", row_group_size=3)


def config(root: Path, model: Path, input_path: str, **block) -> Path:
    entry = {"model_name": str(model), "backend": "transformers", "output_layers": 1}
    data = {
        "dataset_path": str(root),
        "shard_size": 3,
        "workers": 0,
        "output_format": "compact",
        "visual": {
            "items": {
                "input_path": input_path,
                "output_path": "out",
                **block,
                "model": [{**entry, "batch_size": 2}],
            }
        },
    }
    path = root / f"config-{len(list(root.glob('config*')))}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def features(root: Path) -> dict[str, np.ndarray]:
    folder = next((root / "ducho-fast").rglob("features.npy")).parent
    ids = (folder / "ids.txt").read_text().split()
    return dict(zip(ids, np.load(folder / "features.npy"), strict=True))


@pytest.fixture(scope="module")
def from_files(tiny_clip, photos, tmp_path_factory) -> Path:
    """The reference: the same photos as files in a folder, on the local engine."""
    root = tmp_path_factory.mktemp("files")
    write_sources(root, photos)
    extract_config(config(root, tiny_clip, "images"), options=QUIET)
    return root


def assert_same_features(got: Path, want: Path) -> None:
    a, b = features(got), features(want)
    assert sorted(a) == sorted(b) and len(a) == 8
    for item_id in a:
        np.testing.assert_allclose(a[item_id], b[item_id], rtol=1e-5, atol=1e-6)


def test_an_image_table_gives_the_features_of_the_same_files(tiny_clip, photos, from_files):
    root = from_files.parent / (from_files.name + "-table")
    write_sources(root, photos)
    (result,) = extract_config(config(root, tiny_clip, "images.parquet"), options=QUIET)
    assert result.succeeded == 8
    assert_same_features(root, from_files)
    table = root / "images.parquet"
    recorded = {
        (f.item_id, f.path, f.stage): f.error for f in read_failures(root / "out" / "failures.tsv")
    }
    files = {(f.item_id, f.stage) for f in read_failures(from_files / "out" / "failures.tsv")}
    assert ("truncated", f"{table}:9", "decode") in recorded  # as the file: decoded, failed
    assert files == {("truncated", "decode")}
    assert recorded[("null-cell", f"{table}:10", "read")] == (
        "no image bytes in the row (null); row skipped"
    )
    assert "elsewhere/x.jpg" in recorded[("path-only", f"{table}:11", "read")]
    assert recorded[("empty", f"{table}:12", "read")] == "empty image bytes; row skipped"
    first = next(iter(photos))
    assert recorded[(first, f"{table}:13", "id")] == "duplicate id (first kept)"
    assert recorded[("", f"{table}:14", "read")] == "missing id in 'item_id'"
    # a rerun recomputes nothing: the rows' fingerprints are their bytes' hashes
    (again,) = extract_config(config(root, tiny_clip, "images.parquet"), options=QUIET)
    assert again.metrics["items"] == 0


def test_a_binary_column_and_named_columns_work_too(tiny_clip, photos, from_files):
    """Also with two decode workers (forked: each reads its rows with its own reader)."""
    root = from_files.parent / (from_files.name + "-binary")
    write_sources(root, photos, binary=True)
    path = config(root, tiny_clip, "images.parquet", item_column="item_id", image_column="image")
    (result,) = extract_config(path, options=RunOptions(progress=False, workers=2))
    assert result.succeeded == 8
    assert_same_features(root, from_files)


def test_an_image_table_read_through_an_fsspec_url(tiny_clip, photos, from_files):
    """`memory://` is a real non-local fsspec filesystem (per process: decoded inline here);
    `file://` is what a cluster's shared file system looks like."""
    fsspec = pytest.importorskip("fsspec")
    root = from_files.parent / (from_files.name + "-url")
    write_sources(root, photos)
    with fsspec.open("memory://bucket/images.parquet", "wb") as handle:
        handle.write((root / "images.parquet").read_bytes())
    (result,) = extract_config(
        config(root, tiny_clip, "memory://bucket/images.parquet"), options=QUIET
    )
    assert result.succeeded == 8
    assert_same_features(root, from_files)
    (failure, *_) = [f for f in result.failures if f.item_id == "empty"]
    assert failure.path == "memory://bucket/images.parquet:12"


def test_wrong_columns_are_named_with_the_columns_that_exist(photos, tmp_path):
    write_sources(tmp_path, photos)
    table = str(tmp_path / "images.parquet")
    with pytest.raises(
        ConfigError, match=r"no image_column 'picture'; columns: \['item_id', 'image'\]"
    ):
        image_table_columns(table, "item_id", "picture")
    with pytest.raises(ConfigError, match=r"no item_column 'sku'; columns: \['item_id', 'image'\]"):
        image_table_columns(table, "sku", None)
    with pytest.raises(ConfigError, match=r"image_column 'item_id' holds string, not encoded"):
        image_table_columns(table, None, "item_id")
    assert image_table_columns(table, None, None) == ("item_id", "image")  # HF's defaults
    pq.write_table(pa.table({"id": ["a"], "text": ["b"]}), tmp_path / "texts.parquet")
    with pytest.raises(ConfigError, match=r"give image_column .* found none; its columns"):
        image_table_columns(str(tmp_path / "texts.parquet"), None, None)


def test_a_missing_table_or_url_is_one_line(tiny_clip, tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ConfigError, match=r"input file .*gone\.parquet does not exist"):
        extract_config(config(tmp_path, tiny_clip, "gone.parquet"), options=QUIET)
    with pytest.raises(ConfigError, match=r"memory://nowhere/gone\.parquet does not exist"):
        extract_config(config(tmp_path, tiny_clip, "memory://nowhere/gone.parquet"), options=QUIET)
    with pytest.raises(ConfigError, match=r"only Parquet tables are read from URLs"):
        extract_config(config(tmp_path, tiny_clip, "memory://bucket/images"), options=QUIET)


def test_cells_are_read_a_few_rows_at_a_time_in_any_order(tmp_path, monkeypatch):
    """Row groups of 50 rows, read 4 at a time: every cell right, forward and backward,
    and never more than 4 cells held (not the row group)."""
    monkeypatch.setattr(blobs, "READ_ROWS", 4)
    cells = [f"cell {n}".encode() for n in range(120)]
    pq.write_table(
        pa.table({"b": pa.array(cells, pa.binary())}), tmp_path / "t.parquet", row_group_size=50
    )
    reader = blobs.BlobReader(str(tmp_path / "t.parquet"), "b")
    for row in (0, 1, 5, 49, 50, 51, 3, 119, 60, 60, 100, 2):
        assert reader.cell(row) == cells[row]
        assert len(reader.values) <= 4
    with pytest.raises(IndexError, match="row 120 is past the end"):
        reader.cell(120)
    # a row in a later row group: read from that group's start, not through the groups before
    batches, advance = [], reader.advance
    monkeypatch.setattr(reader, "advance", lambda row: batches.append(row) or advance(row))
    assert reader.cell(5) == cells[5] and reader.cell(119) == cells[119]
    assert len(batches) == 2 + 5  # rows 0-7 (2 batches of 4), then 100-119 (5 batches)


def test_listing_keeps_where_the_bytes_are_not_the_bytes(photos, tmp_path):
    write_sources(tmp_path, photos)
    listing = list_image_rows(tmp_path / "images.parquet", "item_id", "image")
    first = listing.items[0]
    assert isinstance(first.blob, Blob) and first.blob.row == 0 and first.text is None
    assert blobs.blob_bytes(first.blob) == photos[first.item_id]
    assert len({item.blob.digest for item in listing.items}) == len(listing.items) == 9


def test_a_drafted_table_cell_keeps_the_files_geometry(large_photos, tmp_path):
    """A cell is decoded by the file's own path through the draft: same picture area, size."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from ducho_fast.core.image import DRAFT_BOX, decode_image
    from ducho_fast.modalities.blobs import decode_blob

    photo = large_photos[0]
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": ["a"], "image": [photo.read_bytes()]}), table)
    cell = decode_blob(Blob(str(table), "image", 0, "digest"), draft_side=224)
    file = decode_image(photo, draft_side=224)
    assert cell.size == file.size and cell.size != Image.open(photo).size
    assert cell.info[DRAFT_BOX] == file.info[DRAFT_BOX]
    assert np.array_equal(np.asarray(cell), np.asarray(file))


def test_an_image_table_calibrates_int8_on_its_own_cells(tiny_clip, photos, tmp_path, monkeypatch):
    """An on-the-fly calibrated int8 export (OpenVINO's NNCF) samples the table's cells as it
    samples a folder's files: before, a table gave no sample and the run stopped with "needs a
    calibration sample"."""
    pytest.importorskip("openvino", reason="pip install ducho-fast[cpu]")
    from ducho_fast.modalities.image import ImageModality, decode_source

    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "cache"))  # a fresh export
    write_sources(tmp_path, photos)
    listing = list_image_rows(tmp_path / "images.parquet", "item_id", "image")
    sample = ImageModality().export_sample(listing.items)
    assert all(isinstance(source, Blob) for source in sample.images)
    assert len(sample.images) == len(photos) - 1  # every photo's cell but the truncated JPEG
    cell = sample.images[0]
    same_file = tmp_path / "images" / f"{listing.items[cell.row].item_id}.img"
    assert np.array_equal(np.asarray(decode_source(cell)), np.asarray(decode_source(same_file)))
    options = RunOptions(progress=False, runtime="openvino", precision="int8")
    (result,) = extract_config(config(tmp_path, tiny_clip, "images.parquet"), options=options)
    assert result.succeeded == len(photos) - 1
