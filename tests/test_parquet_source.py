"""Parquet tables as text sources: the same items, ids, features and failures as the TSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.core.errors import ConfigError
from ducho_fast.engine.sources import list_texts

pa = pytest.importorskip("pyarrow", reason="pip install ducho-fast[ray]")
pq = pytest.importorskip("pyarrow.parquet")

IDS = ["0108775015", "0108775044", "0110065001", "0110065002"]
TEXTS = ["Strap top", "Strap top (1)", "", "OP T-shirt (Idro)"]


def write_both(folder: Path) -> tuple[Path, Path]:
    table = pa.table({"article_id": IDS, "prod_name": [t or None for t in TEXTS]})
    pq.write_table(table, folder / "items.parquet")
    rows = "\n".join(f"{i}\t{t}" for i, t in zip(IDS, TEXTS, strict=True))
    (folder / "items.tsv").write_text("article_id\tprod_name\n" + rows + "\n")
    return folder / "items.parquet", folder / "items.tsv"


def test_a_parquet_table_lists_what_its_tsv_lists(tmp_path):
    parquet, tsv = write_both(tmp_path)
    got = list_texts(parquet, "article_id", ("prod_name",))
    want = list_texts(tsv, "article_id", ("prod_name",))
    assert [(i.item_id, i.text) for i in got.items] == [(i.item_id, i.text) for i in want.items]
    (failure,) = got.failures  # the empty text, named by its row
    assert (failure.item_id, failure.path, failure.error) == (
        "0110065001",
        f"{parquet}:3",
        "empty or missing text",
    )


def test_parquet_texts_give_the_features_of_the_tsv(tiny_clip, tmp_path):
    parquet, tsv = write_both(tmp_path)
    features = {}
    for source in (parquet, tsv):
        out = tmp_path / source.suffix[1:]
        job = SingleModelJob(str(tiny_clip), out, texts=source, id_column="article_id")
        job = SingleModelJob(**{**job.__dict__, "text_column": "prod_name", "batch_size": 2})
        (result,) = extract_single(job, RunOptions(progress=False, workers=0))
        assert result.succeeded == 3
        folder = next(out.rglob("features.npy")).parent
        features[source.suffix] = (
            (folder / "ids.txt").read_text(),
            np.load(folder / "features.npy"),
        )
    assert features[".parquet"][0] == features[".tsv"][0]
    np.testing.assert_array_equal(features[".parquet"][1], features[".tsv"][1])


def test_a_damaged_parquet_file_is_named(tmp_path):
    (tmp_path / "items.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ConfigError, match=r"items\.parquet is not a readable Parquet file"):
        list_texts(tmp_path / "items.parquet", "id", ("text",))


def test_a_parquet_text_table_through_an_fsspec_url_lists_what_the_file_lists(tmp_path):
    """`memory://` is a real non-local fsspec filesystem; `file://` the URL of a local file."""
    fsspec = pytest.importorskip("fsspec")
    parquet, _ = write_both(tmp_path)
    with fsspec.open("memory://texts/items.parquet", "wb") as handle:
        handle.write(parquet.read_bytes())
    want = list_texts(parquet, "article_id", ("prod_name",))
    for url in ("memory://texts/items.parquet", parquet.as_uri()):
        got = list_texts(url, "article_id", ("prod_name",))
        assert [(i.item_id, i.text) for i in got.items] == [(i.item_id, i.text) for i in want.items]
        assert [f.path for f in got.failures] == [f"{url}:3"]


def test_a_tsv_is_not_read_from_a_url(tmp_path):
    with pytest.raises(ConfigError, match=r"only Parquet tables are read from URLs"):
        list_texts("s3://bucket/items.tsv", "id", ("text",))
