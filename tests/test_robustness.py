"""Bad input: every file is featured or recorded with a reason; nothing escapes the output."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.cli import main
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.engine.state import read_failures

from . import synthetic
from .conftest import shared_set

QUIET = RunOptions(progress=False, shard_size=32, item_timeout=5)


def run_images(model: Path, images: Path, output: Path, options: RunOptions = QUIET):
    results = extract_single(SingleModelJob(str(model), output, images=images), options)
    folder = output / model.name / "image_embeds"
    ids = (folder / "ids.txt").read_text().splitlines()
    return results[0], ids, np.load(folder / "features.npy")


@pytest.fixture(scope="session")
def synthetic_edge_cases(tmp_path_factory) -> tuple[Path, dict[str, synthetic.Made]]:
    """Every mode and container, and damaged files made as the real ones were (runs anywhere)."""
    folder = tmp_path_factory.mktemp("edge-cases") / "images"
    return folder, synthetic.broken_and_odd_images(folder)


def edge_case_folder(data_set: str, request) -> Path:
    """The real set's images (skip without ../shared), or the synthetic edge cases."""
    if data_set == "synthetic":
        return request.getfixturevalue("synthetic_edge_cases")[0]
    why = "real-world files no generator reproduces (the [synthetic] case runs everywhere)"
    return shared_set(data_set, why) / "images"


@pytest.mark.parametrize("data_set", ["sharp-fixtures", "skimage-data", "synthetic"])
def test_every_file_is_featured_or_recorded(data_set, tiny_clip, tmp_path, request):
    folder = edge_case_folder(data_set, request)
    result, ids, features = run_images(tiny_clip, folder, tmp_path / "out")
    failures = read_failures(tmp_path / "out" / "failures.tsv")
    listed = list(folder.iterdir())  # every entry: a file of any name, or a recorded skip
    featured = {folder / f"{i}{suffix}" for i in ids for suffix in {p.suffix for p in listed}}
    recorded = {Path(f.path) for f in failures}
    for path in listed:
        assert path in featured or path in recorded, f"{path.name}: neither featured nor recorded"
    assert all(f.error and f.stage in ("decode", "preprocess", "id", "skipped") for f in failures)
    assert np.isfinite(features).all() and len(ids) == len(set(ids))
    assert result.succeeded == len(ids) > 0


@pytest.mark.parametrize("data_set", ["sharp-fixtures", "synthetic"])
def test_known_bad_fixtures_are_recorded_with_reasons(data_set, tiny_clip, tmp_path, request):
    folder = edge_case_folder(data_set, request)
    run_images(tiny_clip, folder, tmp_path / "out")
    failures = {Path(f.path).name: f for f in read_failures(tmp_path / "out" / "failures.tsv")}
    assert "DecompressionBomb" in failures["giant-image.jpg"].error
    assert failures["corrupt-header.jpg"].stage == "decode"


def test_each_mode_and_container_gets_features_and_damage_is_recorded(
    tiny_clip, tmp_path, synthetic_edge_cases
):
    folder, made = synthetic_edge_cases
    result, ids, features = run_images(tiny_clip, folder, tmp_path / "out")
    assert sorted(ids) == sorted(Path(name).stem for name, m in made.items() if m.fails is None)
    assert features.shape[0] == len(ids) and np.isfinite(features).all()
    failures = {Path(f.path).name: f for f in read_failures(tmp_path / "out" / "failures.tsv")}
    assert {name: f.stage for name, f in failures.items()} == {
        name: m.fails for name, m in made.items() if m.fails
    }
    assert "DecompressionBomb" in failures["huge-header.png"].error
    assert "truncated" in failures["truncated.jpg"].error.lower()
    assert len(result.failures) == len(failures)


def test_missing_and_stuck_files_are_recorded(tiny_clip, skimage_photos, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    photos = skimage_photos[:3]
    for photo in photos:
        (folder / photo.name).symlink_to(photo)
    (folder / "gone.jpg").symlink_to(tmp_path / "does-not-exist.jpg")
    os.mkfifo(folder / "stuck.jpg")  # opening it would block forever: never opened
    options = RunOptions(progress=False, item_timeout=1, workers=1)
    result, ids, _ = run_images(tiny_clip, folder, tmp_path / "out", options)
    assert ids == sorted(photo.stem for photo in photos)
    failures = {f.item_id: f for f in read_failures(tmp_path / "out" / "failures.tsv")}
    assert "FileNotFoundError" in failures["gone"].error
    assert "a FIFO, not a regular file" in failures["stuck"].error
    assert len(result.failures) == 2


def test_exif_orientations_give_equal_features(tiny_clip, tmp_path, exif_orientation_images):
    folder = exif_orientation_images
    _, ids, features = run_images(tiny_clip, folder, tmp_path / "out")
    assert len(ids) == 18
    for kind in ("Landscape", "Portrait"):
        rows = [ids.index(f"{kind}_{n}") for n in range(9)]
        base = features[rows[1]][None]
        cosines = row_cosines(np.repeat(base, 9, axis=0), features[rows])
        assert cosines.min() >= 0.999, cosines.round(5)


def test_unsafe_ids_are_refused_and_nothing_escapes(tiny_st, tmp_path):
    table = tmp_path / "items.tsv"
    rows = [
        "id\ttext",
        "../escape\tred dress",
        "a/b\tblue jeans",
        "ok\tgreen coat",
        f"{'x' * 300}\tlong id",
        "ok\tduplicate",
        ".hidden\tdot",
        "empty\t  ",
    ]
    table.write_text("\n".join(rows) + "\n")
    output = tmp_path / "out"
    job = SingleModelJob(str(tiny_st), output, texts=table)
    extract_single(job, RunOptions(progress=False, output_format="both"))
    written = sorted(p.name for p in (output / "ducho" / "st" / "sentence_embedding").iterdir())
    assert written == ["ok.npy"]
    assert not (tmp_path / "escape.npy").exists() and not (output / "a").exists()
    failures = read_failures(output / "failures.tsv")
    reasons = {f.item_id: (f.stage, f.error) for f in failures}
    assert reasons["../escape"][0] == "id" and reasons["a/b"][0] == "id"
    assert "too long" in reasons["x" * 300][1]
    assert "duplicate" in reasons["ok"][1] and reasons[".hidden"][0] == "id"
    assert reasons["empty"] == ("read", "empty or missing text")


def write_yaml(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def text_config(tmp_path: Path, model: str, **block) -> dict:
    (tmp_path / "items.tsv").write_text("asin\tdescription\n1\tred dress\n")
    return {
        "dataset_path": str(tmp_path),
        "textual": {
            "items": {
                "input_path": "items.tsv",
                "item_column": "asin",
                "text_column": "description",
                "output_path": "out",
                "model": [{"model_name": model, "backend": "sentence_transformers"}],
                **block,
            }
        },
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c["textual"]["items"]["model"][0].update(model_name="./no-such-model"),
            "textual.items.model[0].model_name './no-such-model': ./no-such-model does not exist",
        ),
        (
            lambda c: c["textual"]["items"].update(text_column="title"),
            "has no column(s) ['title']; columns: ['asin', 'description']",
        ),
        (
            lambda c: c["textual"]["items"]["model"][0].update(batch_size="big"),
            "batch_size: Input should be a valid integer",
        ),
        (
            lambda c: c["textual"]["items"]["model"][0].update(backend="tensorflow"),
            "tensorflow backend is not supported",
        ),
        (
            lambda c: c.update(
                audio={
                    "items": {
                        "input_path": "clips",
                        "output_path": "out",
                        "model": [{"model_name": "WAV2VEC2_BASE", "backend": "torch"}],
                    }
                }
            ),
            "torchaudio pipeline",
        ),
    ],
    ids=["missing-model", "missing-column", "wrong-type", "tensorflow", "audio-torchaudio"],
)
def test_bad_config_is_refused_before_running(change, message, tmp_path, tiny_st):
    config = text_config(tmp_path, str(tiny_st))
    change(config)
    result = CliRunner().invoke(main, ["extract", "--config", str(write_yaml(tmp_path, config))])
    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "ducho-fast").exists()


def test_strict_fails_on_any_failure_but_keeps_results(tmp_path, tiny_st):
    config = text_config(tmp_path, str(tiny_st))
    (tmp_path / "items.tsv").write_text("asin\tdescription\n1\tred dress\n2\t\n")
    path = write_yaml(tmp_path, config)
    assert (
        CliRunner().invoke(main, ["extract", "--config", str(path), "--no-progress"]).exit_code == 0
    )
    strict = CliRunner().invoke(
        main, ["extract", "--config", str(path), "--strict", "--no-progress"]
    )
    assert strict.exit_code == 1 and "1 items failed" in strict.output
    assert (
        tmp_path / "out" / "sentence_transformers" / "st" / "sentence_embedding" / "1.npy"
    ).is_file()
