"""The parquet sink: one `features.parquet` per output equal to the compact arrays, read by
pyarrow and pandas (polars, DuckDB and Ray read the same file; not installed here), with the
run's fingerprint, model, layer and dimension in its metadata; rewritten by a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.cli import main

pa = pytest.importorskip("pyarrow", reason="pip install ducho-fast[parquet]")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

OPTIONS = RunOptions(progress=False, output_format="compact,parquet", runtime="torch")
TEXTS = ["a red car", "a blue sky", "two dogs playing", "an empty street at night", "tea"]


def write_texts(path: Path, texts: list[str]) -> Path:
    rows = [f"t{i}\t{text}" for i, text in enumerate(texts)]
    path.write_text("id\ttext\n" + "\n".join(rows) + "\n")
    return path


def run(model: Path, table: Path, out: Path, options: RunOptions = OPTIONS) -> Path:
    job = SingleModelJob(str(model), out, texts=table, batch_size=2)
    extract_single(job, options)
    (folder,) = {p.parent for p in out.rglob("features.parquet")}
    return folder


@pytest.fixture(scope="module")
def output(tiny_st, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parquet")
    return run(tiny_st, write_texts(root / "texts.tsv", TEXTS), root / "out")


def compact(folder: Path) -> tuple[list[str], np.ndarray]:
    return (folder / "ids.txt").read_text().split(), np.load(folder / "features.npy")


def test_parquet_equals_the_compact_output_through_pyarrow(output):
    table = pq.read_table(output / "features.parquet")
    assert table.schema.field("id").type == pa.string()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    ids, features = compact(output)
    assert table.column("id").to_pylist() == ids == [f"t{i}" for i in range(len(TEXTS))]
    rows = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    np.testing.assert_array_equal(rows, features)


def test_pandas_reads_it(output):
    frame = pd.read_parquet(output / "features.parquet")
    ids, features = compact(output)
    assert list(frame["id"]) == ids
    np.testing.assert_array_equal(np.stack(frame["embedding"]).astype(np.float32), features)


def test_metadata_names_the_run(output):
    meta = json.loads(pq.read_schema(output / "features.parquet").metadata[b"ducho_fast"])
    manifest = json.loads((output / "manifest.json").read_text())
    assert meta["fingerprint"] == manifest["fingerprint"]
    assert (meta["model"], meta["layer"]) == (output.parent.name, output.name)
    assert (meta["dim"], meta["count"]) == (32, len(TEXTS))


def test_a_rerun_that_changes_the_items_rewrites_it(tiny_st, tmp_path):
    table = write_texts(tmp_path / "texts.tsv", TEXTS)
    folder = run(tiny_st, table, tmp_path / "out")
    write_texts(table, [*TEXTS[:2], "a new text", *TEXTS[3:]])  # t2 edited
    table.write_text("\n".join(table.read_text().splitlines()[:-1]) + "\n")  # t4 removed
    run(tiny_st, table, tmp_path / "out")
    frame = pd.read_parquet(folder / "features.parquet")
    ids, features = compact(folder)
    assert list(frame["id"]) == ids == ["t0", "t1", "t2", "t3"]
    np.testing.assert_array_equal(np.stack(frame["embedding"]), features)


def test_the_cli_takes_several_formats_and_names_an_unknown_one(tiny_st, tmp_path):
    table = write_texts(tmp_path / "texts.tsv", TEXTS[:2])
    args = ["extract", "--model", str(tiny_st), "--texts", str(table), "--runtime", "torch"]
    args += ["--output", str(tmp_path / "out"), "--no-progress", "--batch-size", "2"]
    ok = CliRunner().invoke(main, [*args, "--output-format", "ducho,parquet"])
    assert ok.exit_code == 0, ok.output
    assert len(list((tmp_path / "out").rglob("features.parquet"))) == 1
    assert len(list((tmp_path / "out").rglob("t1.npy"))) == 1  # Ducho's layout beside it
    bad = CliRunner().invoke(main, [*args, "--output-format", "compact,parket"])
    assert bad.exit_code == 2 and "parket" in bad.output
