"""Spectrogram audio encoders: Whisper's encoder, AST and CLAP's audio tower, each with its own
feature extractor run in the decode workers. Features equal eager transformers clip by clip,
batched equal one-by-one, the export is validated at several lengths and batch sizes, long
clips run in the model's own windows, and CLAP's features are deterministic although its
extractor crops long inputs at random. Tiny seeded models built from configs."""

from __future__ import annotations

import functools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.core.audio import decode_audio
from ducho_fast.core.fidelity import row_cosines

from .audio_models import save_ast, save_clap, save_whisper
from .conftest import shared_or_none

sf = pytest.importorskip("soundfile")

QUIET = RunOptions(progress=False, workers=0)
TORCH = RunOptions(progress=False, workers=0, runtime="torch")
# The layers each model is run with in every test (one export per model in the cache).
LAYERS = {
    "whisper": ("last_hidden_state", "1"),
    "ast": ("pooler_output", "last_hidden_state"),
    "clap": ("audio_embeds",),
}
RATES = {"whisper": 16000, "ast": 16000, "clap": 48000}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("spectrogram-encoders")
    return {
        "whisper": save_whisper(root / "whisper"),
        "ast": save_ast(root / "ast"),
        "clap": save_clap(root / "clap"),
    }


def tone(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * (200 + 90 * seed) * t * (1 + 0.1 * np.sin(t)))
    return (wave + 0.05 * rng.normal(size=len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Six short clips of different lengths: shared spoken digits (8 kHz), or tones."""
    folder = tmp_path_factory.mktemp("spectrogram-clips")
    shared = shared_or_none("audio-fsdd-spoken-digits")
    if shared is not None:
        for path in sorted((shared / "recordings").glob("*.wav"))[7::200][:6]:
            shutil.copy(path, folder / path.name)
    else:
        for n in range(6):
            sf.write(folder / f"{n}_synth.wav", tone(0.3 + 0.11 * n, 8000, seed=n), 8000)
    return folder


@functools.cache
def eager(folder: Path):
    """The model as transformers users load it (CLAP: the whole ClapModel) and its extractor."""
    import transformers

    config = json.loads((folder / "config.json").read_text())
    name = {
        "whisper": "WhisperModel",
        "audio-spectrogram-transformer": "ASTModel",
        "clap": "ClapModel",
    }[config["model_type"]]
    model = getattr(transformers, name).from_pretrained(folder, attn_implementation="eager")
    return transformers.AutoFeatureExtractor.from_pretrained(folder), model.eval()


def eager_rows(kind: str, folder: Path, wave: np.ndarray) -> dict[str, np.ndarray]:
    """Eager transformers on one whole clip (at most the model's input length), by layer."""
    import torch

    extractor, model = eager(folder)
    rate = RATES[kind]
    with torch.inference_mode():
        if kind == "whisper":
            x = extractor(wave, sampling_rate=rate, return_attention_mask=True, return_tensors="pt")
            out = model.encoder(x["input_features"], output_hidden_states=True)
            frames = math.ceil(int(x["attention_mask"].sum()) / 2)  # the real audio's frames
            return {
                "last_hidden_state": out.last_hidden_state[0, :frames].mean(0).numpy(),
                "hidden_states.1": out.hidden_states[1][0, :frames].mean(0).numpy(),
            }
        x = extractor(wave, sampling_rate=rate, return_tensors="pt")
        if kind == "ast":
            out = model(**x)
            return {
                "pooler_output": out.pooler_output[0].numpy(),
                "last_hidden_state": out.last_hidden_state[0].mean(0).numpy(),
            }
        pooled = model.audio_model(**x).pooler_output
        return {"audio_embeds": model.audio_projection(pooled)[0].numpy()}


def run(kind: str, model: Path, audio: Path, out: Path, batch_size: int, options=QUIET):
    job = SingleModelJob(model, out, audio=audio, layers=LAYERS[kind], batch_size=batch_size)
    results = extract_single(job, options)
    assert not results[0].failures
    found = {}
    for layer_dir in sorted(p for p in out.glob("*/*") if (p / "features.npy").is_file()):
        ids = (layer_dir / "ids.txt").read_text().split()
        found[layer_dir.name] = dict(zip(ids, np.load(layer_dir / "features.npy"), strict=True))
    return found


def assert_close(expected: np.ndarray, row: np.ndarray) -> None:
    assert row.dtype == np.float32 and row.shape == expected.shape
    assert row_cosines(expected[None], row[None])[0] >= 0.9999
    assert np.abs(row - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


@pytest.mark.parametrize("kind", ["whisper", "ast", "clap"])
def test_equal_eager_clip_by_clip_batched_equal_one_by_one_export_validated(
    models, clips, tmp_path, kind
):
    """ONNX Runtime, batches of 4, against eager transformers on each whole clip; torch at
    batch 1 against the batched run; the export's validation at 0.5 s, 3.7 s and 10 s, batch 1
    and 3 (AST's 10 s are cut to its `max_length` frames by its own extractor)."""
    from ducho_fast.artifact.manifest import read_manifest
    from ducho_fast.core.cache import resolve_cache_dir

    model = models[kind]
    batched = run(kind, model, clips, tmp_path / "ort", batch_size=4)
    alone = run(kind, model, clips, tmp_path / "torch", batch_size=1, options=TORCH)
    names = {"1": "hidden_states.1"}
    assert set(batched) == {names.get(layer, layer) for layer in LAYERS[kind]}
    for path in sorted(clips.iterdir()):
        expected = eager_rows(kind, model, decode_audio(path, RATES[kind]))
        for layer, rows in batched.items():
            assert_close(expected[layer], rows[path.stem])
            np.testing.assert_allclose(rows[path.stem], alone[layer][path.stem], atol=1e-5)
    (artifact,) = (resolve_cache_dir() / "artifacts").glob(f"{model.name}-fp32-*")
    validation = read_manifest(artifact).graph("audio").validation["fp32"]
    cases = {case["case"].split(",sample")[0] for case in validation["cases"]}
    for seconds in ("0.5s", "3.7s", "10s"):
        assert {f"batch=1,len={seconds}", f"batch=3,len={seconds}"} <= cases
    assert validation["passed"] and validation["min_cosine"] >= 0.9999


def test_whisper_long_clips_run_in_its_windows_pooled_by_real_audio(models, tmp_path):
    """A 45 s and a 2-minute clip: windows of the model's input length (here 10 s; 30 s for
    the real models), the last one ending at the clip's end, each window's frames of real
    audio pooled, windows weighted by their samples."""
    from ducho_fast.modalities.audio import window_bounds
    from ducho_fast.models.registry import load_model
    from ducho_fast.models.spec import ModelRef

    folder = tmp_path / "long"
    folder.mkdir()
    durations = {"forty-five": 45.0, "two-minutes": 120.0}
    for n, (name, seconds) in enumerate(durations.items()):
        sf.write(folder / f"{name}.flac", tone(seconds, 16000, seed=n), 16000)
    model = models["whisper"]
    got = run("whisper", model, folder, tmp_path / "out", batch_size=2, options=TORCH)
    spec = load_model(ModelRef(str(model), layers=LAYERS["whisper"])).towers[0].preprocess
    assert spec.window_s == 10.0
    for name, seconds in durations.items():
        wave = decode_audio(folder / f"{name}.flac", 16000)
        bounds = window_bounds(len(wave), spec)
        assert len(bounds) == math.ceil(seconds / 10) and bounds[-1][1] == len(wave)
        rows = [eager_rows("whisper", model, wave[a:b])["last_hidden_state"] for a, b in bounds]
        weights = [b - a for a, b in bounds]
        expected = np.average(np.stack(rows), axis=0, weights=weights)
        assert_close(expected, got["last_hidden_state"][name])


def test_clap_features_are_deterministic_though_its_extractor_crops_at_random(models, tmp_path):
    """CLAP's extractor crops an input longer than its 10 s at a random place: two calls on
    the same 25 s clip differ. ducho-fast cuts 10 s windows itself, so two runs agree exactly
    and equal the eager audio side on those windows, averaged."""
    from ducho_fast.modalities.audio import window_bounds
    from ducho_fast.models.registry import load_model
    from ducho_fast.models.spec import ModelRef

    folder = tmp_path / "clap-long"
    folder.mkdir()
    wave = tone(25.0, 48000, seed=3)
    sf.write(folder / "long.wav", wave, 48000, subtype="FLOAT")
    extractor, _ = eager(models["clap"])
    crops = [extractor(wave, sampling_rate=48000)["input_features"][0] for _ in range(3)]
    assert any(not np.array_equal(crops[0], crop) for crop in crops[1:])  # random, as said
    first = run("clap", models["clap"], folder, tmp_path / "a", batch_size=2)
    second = run("clap", models["clap"], folder, tmp_path / "b", batch_size=1)
    row = first["audio_embeds"]["long"]
    np.testing.assert_array_equal(row, second["audio_embeds"]["long"])
    spec = load_model(ModelRef(str(models["clap"]), layers=LAYERS["clap"])).towers[0].preprocess
    decoded = decode_audio(folder / "long.wav", 48000)
    bounds = window_bounds(len(decoded), spec)
    assert len(bounds) == 3 and all(b - a == 480000 for a, b in bounds)
    rows = [eager_rows("clap", models["clap"], decoded[a:b])["audio_embeds"] for a, b in bounds]
    assert_close(np.mean(rows, axis=0), row)


def test_output_layers_each_model_has_and_clear_errors_for_the_rest(models):
    from ducho_fast.core.errors import ModelLoadError
    from ducho_fast.models.registry import load_model
    from ducho_fast.models.spec import ModelRef

    for kind, layer in (("whisper", "pooler_output"), ("clap", "1"), ("clap", "pooler_output")):
        with pytest.raises(ModelLoadError, match="unknown output layer") as info:
            load_model(ModelRef(str(models[kind]), layers=(layer,)))
        assert "one of" in str(info.value)
    with pytest.raises(ModelLoadError, match=r"hidden_states 0\.\.2"):
        load_model(ModelRef(str(models["ast"]), layers=("7",)))
    tower = load_model(ModelRef(str(models["clap"]))).towers[0]
    assert tower.output_names == ("audio_embeds",)  # CLAP's default: its embedding


def test_ducho_block_and_load_run_spectrogram_encoders(models, clips, tmp_path):
    """A Ducho `audio` block with AST's `pooler_output` and CLAP's `audio_embeds` writes
    Ducho's `(1, D)` files equal to the compact rows; `load(...).encode_audio` (AST's default
    layer, `last_hidden_state`) equals eager for paths and for waveforms."""
    import yaml

    import ducho_fast
    from ducho_fast.api import extract_config

    dataset = tmp_path / "data"
    shutil.copytree(clips, dataset / "audio")
    entries = [
        {"model_name": str(models["ast"]), "output_layers": list(LAYERS["ast"])},
        {"model_name": str(models["clap"]), "output_layers": "audio_embeds"},
    ]
    for entry in entries:
        entry.update(backend="transformers", batch_size=4)
    config = {
        "dataset_path": str(dataset),
        "audio": {"items": {"input_path": "audio", "output_path": "out", "model": entries}},
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    extract_config(path, (), QUIET)
    for kind, layer, size in (("ast", "pooler_output", 32), ("clap", "audio_embeds", 16)):
        name = models[kind].name
        ducho = dataset / "out" / "transformers" / name / layer
        compact = dataset / "ducho-fast" / "audio" / "items" / "transformers" / name / layer
        ids = (compact / "ids.txt").read_text().split()
        rows = dict(zip(ids, np.load(compact / "features.npy"), strict=True))
        assert sorted(ids) == sorted(p.stem for p in clips.iterdir())
        for item_id, row in rows.items():
            array = np.load(ducho / f"{item_id}.npy")
            assert array.shape == (1, size) and array.dtype == np.float32
            np.testing.assert_array_equal(array[0], row)
    encoder = ducho_fast.load(models["ast"])  # exported with its default layer
    paths = sorted(clips.iterdir())
    encoded = encoder.encode_audio(paths, batch_size=3)
    for path, got in zip(paths, encoded, strict=True):
        wave = decode_audio(path, 16000)
        assert_close(eager_rows("ast", models["ast"], wave)["last_hidden_state"], got)
    np.testing.assert_allclose(encoder.encode_audio(wave)[0], encoded[-1], atol=1e-5)


def test_checkpoints_of_the_hub_classes_load_the_same_tower(models, tmp_path):
    """openai/whisper-* are WhisperForConditionalGeneration checkpoints; a CLAP audio tower
    may be saved alone (ClapAudioModelWithProjection, model_type clap_audio_model)."""
    import torch
    import transformers

    from ducho_fast.models.registry import load_model
    from ducho_fast.models.spec import ModelRef

    pairs = (
        ("whisper", "WhisperForConditionalGeneration", "WhisperFeatureExtractor"),
        ("clap", "ClapAudioModelWithProjection", "ClapFeatureExtractor"),
    )
    for kind, model_class, extractor_class in pairs:
        saved = tmp_path / model_class
        getattr(transformers, model_class).from_pretrained(models[kind]).save_pretrained(saved)
        getattr(transformers, extractor_class).from_pretrained(models[kind]).save_pretrained(saved)
        ours, theirs = (load_model(ModelRef(str(f))).towers[0] for f in (models[kind], saved))
        size = int(np.prod(ours.preprocess.feature_shape))
        x = torch.randn(2, size, generator=torch.Generator().manual_seed(0))
        mask = torch.ones(2, ours.preprocess.feature_shape[-1], dtype=torch.int64)
        with torch.inference_mode():
            assert torch.equal(ours.module(x, mask)[0], theirs.module(x, mask)[0])
        assert ours.preprocess == theirs.preprocess


def test_whisper_in_decode_workers_after_an_export_does_not_hang(models, clips, tmp_path):
    """Whisper's extractor runs torch's STFT in the forked decode workers; after the parent
    ran torch (the export on the fly), torch's inherited OpenMP pool hung them forever. A
    fresh process, as a user's first run: export, then two workers (bounded by a timeout)."""
    import os
    import subprocess
    import sys

    audio = tmp_path / "clips"
    audio.mkdir()
    for path in sorted(clips.iterdir())[:3]:
        shutil.copy(path, audio / path.name)
    args = [sys.executable, "-m", "ducho_fast.cli", "extract", "--model", str(models["whisper"])]
    args += ["--audio", str(audio), "--output", str(tmp_path / "out"), "--workers", "2"]
    args += ["--batch-size", "2", "--no-progress", "--layer", "last_hidden_state"]
    env = {**os.environ, "DUCHO_FAST_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = np.load(tmp_path / "out" / "whisper" / "last_hidden_state" / "features.npy")
    assert rows.shape == (3, 32) and np.isfinite(rows).all()


def test_an_extractor_that_adds_random_noise_is_refused(models, tmp_path):
    """Whisper's extractor can dither (add noise to every clip): features would differ from
    run to run, so such a model is refused, naming the setting."""
    from transformers import WhisperFeatureExtractor

    from ducho_fast.core.errors import ModelLoadError
    from ducho_fast.models.registry import load_model
    from ducho_fast.models.spec import ModelRef

    folder = tmp_path / "dithered"
    shutil.copytree(models["whisper"], folder)
    WhisperFeatureExtractor(feature_size=80, chunk_length=10, dither=0.5).save_pretrained(folder)
    with pytest.raises(ModelLoadError, match=r"dither=0\.5"):
        load_model(ModelRef(str(folder)))
