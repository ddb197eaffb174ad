"""`inspect`: every layout the tool writes (compact, parquet, Ducho's), its counts,
dimensions, fingerprints, timings and failures by stage, neighbours and the PNG map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.cli import main
from ducho_fast.core.errors import ConfigError
from ducho_fast.outputs.inspect import InspectOptions, inspect_run, nearest, report
from ducho_fast.outputs.read import read_output

TEXTS = {
    "a": "a red car",
    "b": "a red bus",
    "c": "blue sky",
    "d": "",
    "e": "dark night",
    "f": "tea",
}


@pytest.fixture(scope="module")
def run(tiny_st, tmp_path_factory) -> Path:
    """A real run in all three layouts; `d` (empty text) and a duplicate `a` fail to read."""
    root = tmp_path_factory.mktemp("inspect")
    rows = "".join(f"{k}\t{v}\n" for k, v in TEXTS.items()) + "a\tagain\n"
    (root / "texts.tsv").write_text("id\ttext\n" + rows)
    options = RunOptions(progress=False, output_format="ducho,compact,parquet", runtime="torch")
    job = SingleModelJob(str(tiny_st), root / "out", texts=root / "texts.tsv", batch_size=2)
    extract_single(job, options)
    (root / "genres.csv").write_text("id,genre\na,vehicle\nb,vehicle\nc,nature\ne,nature\n")
    return root


def test_every_layout_is_summarised(run):
    found = inspect_run(run / "out", InspectOptions(neighbours=2, top=2))
    by_layout = {o.layouts: o for o in found.outputs}
    assert set(by_layout) == {("compact", "parquet"), ("ducho",)}
    for summary in found.outputs:
        assert (summary.count, summary.dim, summary.layer) == (5, 32, "sentence_embedding")
    # Ducho's layout keeps no record beside its files: its fingerprint comes from the state
    assert by_layout[("ducho",)].fingerprint == by_layout[("compact", "parquet")].fingerprint != "-"
    assert by_layout[("compact", "parquet")].timings["wall_seconds"] > 0
    ((_, stages),) = found.failures.items()
    assert stages["read"] == 1 and stages["id"] == 1  # the empty text, the duplicate id
    assert len(found.neighbours) == 2 and all(len(n.nearest) == 2 for n in found.neighbours)


def test_neighbours_are_the_most_similar_items(run):
    features = read_output(next((run / "out").rglob("features.npy")).parent, "compact")
    (first,) = nearest(features, 1, 4)
    unit = features.features / np.linalg.norm(features.features, axis=1, keepdims=True)
    scores = unit[1:] @ unit[0]
    assert [i for i, _ in first.nearest] == [features.ids[1 + k] for k in np.argsort(-scores)]
    np.testing.assert_allclose([s for _, s in first.nearest], np.sort(scores)[::-1], rtol=1e-5)


def test_map_is_a_png_coloured_by_the_table(run, tmp_path):
    pytest.importorskip("matplotlib", reason="pip install ducho-fast[inspect]")
    options = InspectOptions(
        map_path=tmp_path / "map.png", table=run / "genres.csv", colour_column="genre"
    )
    found = inspect_run(run / "out", options)
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("map:" in line for line in report(found))
    with pytest.raises(ConfigError, match="--colour-column"):
        inspect_run(
            run / "out", InspectOptions(map_path=tmp_path / "x.png", table=run / "genres.csv")
        )


def test_select_picks_an_output_and_names_the_choices(run):
    found = inspect_run(run / "out", InspectOptions(select="ducho"))
    assert "ducho" in str(found.inspected)
    with pytest.raises(ConfigError, match="matches 2 outputs"):
        inspect_run(run / "out", InspectOptions(select="sentence_embedding"))


def test_cli_inspect(run, tmp_path):
    result = CliRunner().invoke(main, ["inspect", str(run / "out")])
    assert result.exit_code == 0, result.output
    assert "5 items x 32" in result.output and "read 1" in result.output
    empty = CliRunner().invoke(main, ["inspect", str(tmp_path)])
    assert empty.exit_code == 1 and "holds no output" in empty.output
