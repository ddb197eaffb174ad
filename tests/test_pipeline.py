"""Pipelined == sequential, CLI == API, and a SIGKILLed run resumes to the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.cli import main


@pytest.fixture(scope="module")
def product_images(tmp_path_factory, product_photos) -> Path:
    """240 small product photos (links to ../shared's or to synthetic ones)."""
    folder = tmp_path_factory.mktemp("products")
    for path in product_photos:
        (folder / path.name).symlink_to(path)
    return folder


def run_api(model: Path, images: Path, output: Path, **options) -> Path:
    job = SingleModelJob(str(model), output, images=images, batch_size=16)
    extract_single(job, RunOptions(progress=False, shard_size=64, **options))
    return output / model.name / "image_embeds"


def compact(folder: Path) -> tuple[list[str], np.ndarray]:
    return (folder / "ids.txt").read_text().splitlines(), np.load(folder / "features.npy")


def test_pipelined_equals_sequential(tiny_clip, product_images, tmp_path):
    piped = compact(run_api(tiny_clip, product_images, tmp_path / "piped", workers=2))
    inline = compact(
        run_api(tiny_clip, product_images, tmp_path / "inline", workers=0, pipelined=False)
    )
    assert piped[0] == inline[0] and len(piped[0]) == 240
    np.testing.assert_array_equal(piped[1], inline[1])


def test_cli_equals_python_api(tiny_clip, product_images, tmp_path):
    api = compact(run_api(tiny_clip, product_images, tmp_path / "api", workers=2))
    result = CliRunner().invoke(
        main,
        [
            "extract",
            "--model",
            str(tiny_clip),
            "--images",
            str(product_images),
            "--output",
            str(tmp_path / "cli"),
            "--batch-size",
            "16",
            "--shard-size",
            "64",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "240/240 items" in result.output
    cli = compact(tmp_path / "cli" / tiny_clip.name / "image_embeds")
    assert cli[0] == api[0]
    np.testing.assert_array_equal(cli[1], api[1])


def extract_command(model: Path, images: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ducho_fast.cli",
        "extract",
        "--model",
        str(model),
        "--images",
        str(images),
        "--output",
        str(output),
        "--batch-size",
        "4",
        "--shard-size",
        "16",
        "--workers",
        "1",
        "--output-format",
        "both",
        "--no-progress",
    ]


def test_sigkill_then_resume_equals_uninterrupted_run(tiny_clip, product_images, tmp_path):
    env = {**os.environ, "DUCHO_FAST_CACHE": str(tmp_path / "cache")}
    reference = tmp_path / "reference"
    first = subprocess.run(
        extract_command(tiny_clip, product_images, reference),
        env=env,
        capture_output=True,
        text=True,
    )
    assert first.returncode == 0, first.stderr[-2000:]

    output = tmp_path / "killed"
    log = tmp_path / "killed.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            extract_command(tiny_clip, product_images, output),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    state = output / ".ducho-fast" / "state" / tiny_clip.name
    deadline = time.monotonic() + 120
    while len(list(state.glob("shard-*.json"))) < 3 and time.monotonic() < deadline:
        finished = process.poll()
        assert finished is None, f"exited ({finished}) before the kill: {log.read_text()[-2000:]}"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    committed = len(list(state.glob("shard-*.json")))
    assert 3 <= committed < 15, f"{committed} shards of 15 committed: not interrupted mid-way"

    resumed = subprocess.run(
        extract_command(tiny_clip, product_images, output), env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ids, features = compact(output / tiny_clip.name / "image_embeds")
    ref_ids, ref_features = compact(reference / tiny_clip.name / "image_embeds")
    assert ids == ref_ids and len(ids) == len(set(ids)) == 240
    np.testing.assert_array_equal(features, ref_features)
    per_item = sorted(
        p.name for p in (output / "ducho" / tiny_clip.name / "image_embeds").iterdir()
    )
    assert per_item == sorted(f"{i}.npy" for i in ids)  # no temp files, no duplicates
    assert not list(output.rglob("*.tmp*"))


def test_a_script_without_main_guard_can_extract(tiny_clip, skimage_photos, tmp_path):
    """Decode workers must not re-import the user's script (spawn/forkserver would)."""
    import subprocess
    import sys

    images = tmp_path / "images"
    images.mkdir()
    for photo in skimage_photos[:4]:
        (images / photo.name).write_bytes(photo.read_bytes())
    script = tmp_path / "user_script.py"
    script.write_text(
        "from pathlib import Path\n"
        "from ducho_fast.api import RunOptions, SingleModelJob, extract_single\n"
        f"job = SingleModelJob({str(tiny_clip)!r}, Path({str(tmp_path / 'out')!r}), "
        f"images=Path({str(images)!r}))\n"
        "(result,) = extract_single(job, RunOptions(runtime='torch', progress=False, workers=2))\n"
        "print('succeeded', result.succeeded)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "succeeded 4"


def test_reopening_removes_partial_writes_of_a_killed_run(tmp_path):
    from ducho_fast.engine.sinks import LayerOutput
    from ducho_fast.engine.state import ShardStore, features_dir

    ducho = tmp_path / "ducho"
    output = LayerOutput("m/1", {"compact": tmp_path / "compact", "ducho": ducho})
    store = ShardStore(tmp_path / "state", {"run": 1}, [output])
    store.open(overwrite=False)
    ducho.mkdir(parents=True)
    (ducho / "a.npy").write_bytes(b"kept")
    (ducho / ".b.npy.tmp-4242").write_bytes(b"half")
    kept_features = features_dir(tmp_path / "state", "m/1")
    kept_features.mkdir(parents=True)
    (kept_features / ".shard-00000.npy.tmp-4242").write_bytes(b"half")
    ShardStore(tmp_path / "state", {"run": 1}, [output]).open(overwrite=False)
    assert sorted(p.name for p in ducho.iterdir()) == ["a.npy"]
    assert list(kept_features.iterdir()) == []


def test_decoding_starts_before_the_model_opens_and_changes_nothing(
    tiny_clip, skimage_photos, tmp_path, monkeypatch
):
    from ducho_fast import runner as extract_module
    from ducho_fast.api import RunOptions, SingleModelJob, extract_single

    images = tmp_path / "images"
    images.mkdir()
    for photo in skimage_photos:
        (images / photo.name).write_bytes(photo.read_bytes())
    started = []
    original = extract_module.start_decoding_early

    def spy(*args, **kwargs):
        early = original(*args, **kwargs)
        started.append(early is not None)
        return early

    monkeypatch.setattr(extract_module, "start_decoding_early", spy)

    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "cache"))
    features = []
    for run in range(2):  # the first run exports; the second finds the artifact cached
        out = tmp_path / f"out{run}"
        job = SingleModelJob(str(tiny_clip), out, images=images, batch_size=3)
        options = RunOptions(runtime="onnxruntime", progress=False, workers=2, shard_size=4)
        extract_single(job, options)  # (auto would export while measuring, before the pass)
        folder = next(out.rglob("features.npy")).parent
        features.append(((folder / "ids.txt").read_text(), np.load(folder / "features.npy")))
    assert started == [False, True]
    assert features[0][0] == features[1][0]
    np.testing.assert_array_equal(features[0][1], features[1][1])


def test_int8_export_on_the_fly_is_checked_on_the_runs_own_images(
    tiny_clip, product_images, tmp_path, monkeypatch
):
    """The first int8 run exports the model: it validates (and calibrates static int8) on a
    spread of the pass's images, leaving out files that do not decode."""
    import json

    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "cache"))
    images = tmp_path / "images"
    images.mkdir()
    for path in sorted(product_images.iterdir())[:12]:
        (images / path.name).symlink_to(path.resolve())
    (images / "0-broken.jpg").write_bytes(b"not a jpeg")
    job = SingleModelJob(str(tiny_clip), tmp_path / "out", images=images, batch_size=4)
    options = RunOptions(runtime="onnxruntime", precision="int8", progress=False)
    (result,) = extract_single(job, options)
    assert result.succeeded == 12 and [f.item_id for f in result.failures] == ["0-broken"]
    (manifest_path,) = (tmp_path / "cache" / "artifacts").glob("*/manifest.json")
    validation = json.loads(manifest_path.read_text())["graphs"][0]["validation"]
    for report in validation.values():
        assert {c["case"] for c in report["cases"]} == {
            f"batch={b},sample images" for b in (1, 3, 17)
        }
