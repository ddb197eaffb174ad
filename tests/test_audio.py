"""Audio: decoding of every format by content, broken files recorded, features equal to eager
transformers clip by clip, batching never changing a feature, long clips in windows, the Ducho
audio block and the config-free form. Tiny seeded encoders built from configs."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ducho_fast.api import RunOptions, SingleModelJob, extract_config, extract_single
from ducho_fast.core.audio import decode_audio, read_audio
from ducho_fast.core.errors import ConfigError
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.modalities.audio import (
    AudioPreprocessSpec,
    WindowedSession,
    call_groups,
    window_bounds,
)
from ducho_fast.models.synthetic import save_audio_encoder

from .conftest import shared_or_none
from .synthetic import tone

sf = pytest.importorskip("soundfile")
av = pytest.importorskip("av")

RATE = 16000
QUIET = RunOptions(progress=False, workers=0)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio-encoders")
    built = {}
    for model_type in ("wav2vec2", "hubert", "wavlm", "data2vec-audio"):
        built[model_type] = save_audio_encoder(root / model_type, model_type, "layer")
    built["wav2vec2-group"] = save_audio_encoder(root / "w2v-group", "wav2vec2", "group")
    return built


@functools.cache
def eager_model(model_dir: Path):
    from transformers import AutoFeatureExtractor, AutoModel

    extractor = AutoFeatureExtractor.from_pretrained(model_dir)
    return extractor, AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()


def eager_mean(model_dir: Path, wave: np.ndarray, layer: int) -> np.ndarray:
    """Eager transformers on one whole clip, its own feature extractor, mean over frames."""
    import torch

    extractor, model = eager_model(model_dir)
    inputs = extractor(wave, sampling_rate=RATE, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True)
    return out.hidden_states[layer][0].mean(0).numpy()


def features_by_id(folder: Path) -> dict[str, np.ndarray]:
    ids = (folder / "ids.txt").read_text().split()
    return dict(zip(ids, np.load(folder / "features.npy"), strict=True))


def run_single(model: Path, audio: Path, out: Path, **kwargs) -> dict[str, np.ndarray]:
    options = kwargs.pop("options", QUIET)
    tag = kwargs.pop("tag", "")
    job = SingleModelJob(model, out, audio=audio, layers=("1",), **kwargs)
    extract_single(job, options)
    return features_by_id(out / (model.name + tag) / "hidden_states.1")


# --- decoding -----------------------------------------------------------------------------------


def write_av(path: Path, container: str, codec: str, wave: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(wave.T), format="fltp", layout="stereo"
        )
        frame.sample_rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


FORMATS = {
    # name: (writer, lossless)
    "pcm_u8.wav": (lambda p, w, r: sf.write(p, w, r, subtype="PCM_U8"), False),
    "pcm_16.wav": (lambda p, w, r: sf.write(p, w, r, subtype="PCM_16"), True),
    "pcm_24.wav": (lambda p, w, r: sf.write(p, w, r, subtype="PCM_24"), True),
    "pcm_32.wav": (lambda p, w, r: sf.write(p, w, r, subtype="PCM_32"), True),
    "float.wav": (lambda p, w, r: sf.write(p, w, r, subtype="FLOAT"), True),
    "hires.flac": (lambda p, w, r: sf.write(p, w, r, subtype="PCM_24"), True),
    "vorbis.ogg": (lambda p, w, r: sf.write(p, w, r, subtype="VORBIS"), False),
    "opus.ogg": (lambda p, w, r: sf.write(p, w, r, subtype="OPUS"), False),
    "mp3.mp3": (lambda p, w, r: sf.write(p, w, r, format="MP3"), False),
    "aac.m4a": (lambda p, w, r: write_av(p, "mp4", "aac", w, r), False),
    "opus.webm": (lambda p, w, r: write_av(p, "webm", "libopus", w, r), False),
}


@pytest.fixture(scope="module")
def formats(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """One stereo second in every format (FLAC at 192 kHz, the rest at 48 kHz)."""
    folder = tmp_path_factory.mktemp("formats")
    for name, (write, _) in FORMATS.items():
        rate = 192000 if name == "hires.flac" else 48000
        try:
            write(folder / name, tone(1.0, rate, channels=2), rate)
        except Exception as exc:  # an encoder this build of libsndfile/FFmpeg lacks
            print(f"cannot write {name}: {exc}")
    reference = tone(1.0, 48000, channels=2).mean(axis=1)
    return folder, reference


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_decodes_to_mono_at_the_model_rate(formats, name):
    folder, reference = formats
    path = folder / name
    if not path.exists():
        pytest.skip(f"this build cannot encode {name}")
    wave = decode_audio(path, RATE)
    expected = decode_audio_reference(reference, 48000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - RATE) <= 0.05 * RATE  # codecs pad a few ms
    n = min(len(wave), len(expected))
    # Lossy codecs delay the signal: compare the best-aligned cross-correlation.
    corr = np.correlate(wave[:n], expected[:n], "full").max()
    corr /= np.linalg.norm(wave[:n]) * np.linalg.norm(expected[:n])
    assert corr > 0.95
    if FORMATS[name][1]:  # lossless: the same samples, resampled by the same resampler
        rate = sf.info(str(path)).samplerate
        assert np.abs(wave - decode_audio_reference(read_audio(path)[0].mean(1), rate)).max() < 1e-6


def decode_audio_reference(mono: np.ndarray, rate: int) -> np.ndarray:
    import soxr

    return soxr.resample(mono.astype(np.float32), rate, RATE, quality="HQ").astype(np.float32)


def test_files_are_decoded_by_content_not_extension(formats, tmp_path):
    folder, _ = formats
    for source, wrong in (
        ("aac.m4a", "clip.wav"),
        ("mp3.mp3", "clip.flac"),
        ("float.wav", "x.mp3"),
    ):
        if not (folder / source).exists():
            continue
        shutil.copy(folder / source, tmp_path / wrong)
        assert np.array_equal(
            decode_audio(tmp_path / wrong, RATE), decode_audio(folder / source, RATE)
        )


def broken_files(folder: Path) -> dict[str, str]:
    """Broken files and a word their failure must name."""
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("not audio at all\n" * 20)
    header = folder / "header.wav"
    sf.write(header, np.zeros((0, 1), np.float32), 16000)
    good = folder.parent / "good.flac"
    sf.write(good, tone(1.0, 16000), 16000)
    (folder / "truncated.flac").write_bytes(good.read_bytes()[:60])
    sf.write(folder / "tiny.wav", tone(0.005, 16000), 16000)  # 80 samples: under one frame
    return {
        "empty": "empty file",
        "text": "neither libsndfile",
        "header": "no audio samples",
        "truncated": "",
        "tiny": "too short",
    }


def test_broken_files_are_recorded_naming_the_file_and_the_rest_run(encoders, digits, tmp_path):
    clips = tmp_path / "clips"
    shutil.copytree(digits, clips)
    expected = broken_files(clips)
    results = extract_single(
        SingleModelJob(encoders["wav2vec2"], tmp_path / "out", audio=clips, layers=("1",)), QUIET
    )
    failed = {f.item_id: f for f in results[0].failures}
    assert set(failed) == set(expected)
    for item_id, word in expected.items():
        assert failed[item_id].path.endswith(item_id + Path(failed[item_id].path).suffix)
        assert word in failed[item_id].error
    assert results[0].succeeded == len(list(digits.iterdir()))
    table = (tmp_path / "out" / "failures.tsv").read_text()
    assert all(f"{item_id}\t" in table for item_id in expected)


# --- features ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_type", ["wav2vec2", "hubert", "wavlm", "data2vec-audio", "wav2vec2-group"]
)
def test_features_equal_eager_transformers_clip_by_clip(encoders, digits, tmp_path, model_type):
    model = encoders[model_type]
    got = run_single(model, digits, tmp_path / "out", batch_size=4)
    assert len(got) == len(list(digits.iterdir()))
    for path in sorted(digits.iterdir()):
        expected = eager_mean(model, decode_audio(path, RATE), layer=1)
        row = got[path.stem]
        assert row.dtype == np.float32 and row.shape == expected.shape
        assert row_cosines(expected[None], row[None])[0] >= 0.9999
        assert np.abs(row - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_batched_equals_one_by_one(encoders, digits, tmp_path):
    """Clips of different lengths batched together give each clip's one-by-one features (the
    group-normalised model runs equal lengths only; the masked one pads with its mask)."""
    for name in ("wav2vec2-group", "wav2vec2"):
        model = encoders[name]
        batched = run_single(model, digits, tmp_path / name / "b", batch_size=8)
        alone = run_single(model, digits, tmp_path / name / "a", batch_size=1)
        for item_id, row in alone.items():
            np.testing.assert_allclose(batched[item_id], row, rtol=0, atol=1e-5)


def test_padding_would_change_a_group_normalised_model(encoders):
    """Why the equal-length rule exists: padded, the group-normalised encoder's features of the
    short clip move far beyond rounding (so the test above can fail)."""
    import torch

    from ducho_fast.models.registry import load_model
    from ducho_fast.models.spec import ModelRef

    tower = load_model(ModelRef(str(encoders["wav2vec2-group"]), layers=("1",))).towers[0]
    short, long = tone(0.5, RATE)[:, 0], tone(1.0, RATE, seed=1)[:, 0]
    padded = np.zeros((2, len(long)), np.float32)
    padded[0, : len(short)], padded[1] = short, long
    mask = (padded != 0).astype(np.int64)
    mask[1] = 1
    with torch.inference_mode():
        alone = tower.module(
            torch.from_numpy(short[None]), torch.ones(1, len(short), dtype=torch.int64)
        )[0]
        together = tower.module(torch.from_numpy(padded), torch.from_numpy(mask))[0][:1]
    assert np.abs((alone - together).numpy()).max() > 1e-3


def test_windowed_session_runs_unmasked_models_in_equal_length_groups():
    lengths = np.array([5, 7, 5, 7, 9])
    groups = call_groups(lengths, masked=False, budget=100)
    assert sorted(sorted(lengths[g].tolist()) for g in groups) == [[5, 5], [7, 7], [9]]
    masked = call_groups(lengths, masked=True, budget=14)  # two 7s, or one 9, fit a call
    assert all(len(g) * lengths[g].max() <= 14 or len(g) == 1 for g in masked)
    assert sorted(np.concatenate(masked).tolist()) == [0, 1, 2, 3, 4]


# --- long clips ---------------------------------------------------------------------------------


def long_clips(folder: Path) -> dict[str, float]:
    """A 45 s and a 2-minute clip: the shared music, or tones as long."""
    shared = shared_or_none("audio-librosa-examples")
    names = {
        "Hungarian_Dance_number_5_-_Allegro_in_F_sharp_minor_(string_orchestra).ogg": "dance",
        "Kevin_MacLeod_-_P_I_Tchaikovsky_Dance_of_the_Sugar_Plum_Fairy.ogg": "fairy",
    }
    if shared is not None and all((shared / n).is_file() for n in names):
        for name, short in names.items():
            shutil.copy(shared / name, folder / f"{short}.ogg")
    else:
        sf.write(folder / "dance.ogg", tone(45.8, 22050), 22050, subtype="VORBIS")
        sf.write(folder / "fairy.ogg", tone(119.9, 22050, seed=2), 22050, subtype="VORBIS")
    return {"dance": 45.8, "fairy": 119.9}


def test_long_clips_pool_their_windows_weighted_by_frames(encoders, tmp_path):
    clips = tmp_path / "long"
    clips.mkdir()
    durations = long_clips(clips)
    model = encoders["wav2vec2"]
    got = run_single(model, clips, tmp_path / "out", batch_size=2)
    spec = AudioPreprocessSpec(RATE, True, True, (10, 8, 8, 8), (5, 4, 4, 4))
    for item_id, seconds in durations.items():
        wave = decode_audio(clips / f"{item_id}.ogg", RATE)
        assert abs(len(wave) / RATE - seconds) < 0.5
        bounds = window_bounds(len(wave), spec)
        assert len(bounds) >= 3 and all(end - start == spec.window for start, end in bounds)
        assert bounds[0][0] == 0 and bounds[-1][1] == len(wave)
        means = [eager_mean(model, wave[start:end], layer=1) for start, end in bounds]
        frames = spec.frames(np.array([end - start for start, end in bounds]))
        expected = np.average(np.stack(means), axis=0, weights=frames)
        assert row_cosines(expected[None], got[item_id][None])[0] >= 0.9999


def test_window_settings_are_part_of_the_fingerprint(encoders):
    from ducho_fast.models.spec import ModelRef
    from ducho_fast.resolve import open_model
    from ducho_fast.runtime.table import RuntimeChoice

    opened = open_model(
        ModelRef(str(encoders["wav2vec2"]), layers=("1",)), "audio", RuntimeChoice("torch", "fp32")
    )
    preprocess = opened.fingerprint["preprocess"]
    assert (preprocess["window_s"], preprocess["overlap_s"]) == (20.0, 2.0)
    assert preprocess["sampling_rate"] == RATE and preprocess["resampler"] == "soxr-HQ"
    assert isinstance(opened.session, WindowedSession)


# --- export -------------------------------------------------------------------------------------


def test_export_validates_several_lengths_and_batch_sizes(encoders, tmp_path):
    from ducho_fast.api import export
    from ducho_fast.artifact.manifest import read_manifest
    from ducho_fast.exporter.api import ExportConfig
    from ducho_fast.models.spec import ModelRef

    folder = export(
        ExportConfig(ModelRef(str(encoders["wav2vec2"]), layers=("1",)), tmp_path / "a")
    )
    graph = read_manifest(folder).graph("audio")
    cases = {c["case"] for c in graph.validation["fp32"]["cases"]}
    for seconds in ("0.5s", "3.7s", "10s"):
        assert {f"batch=1,len={seconds}", f"batch=3,len={seconds}"} <= cases
    assert "batch=17,len=0.5s" in cases
    assert graph.validation["fp32"]["passed"] and graph.validation["fp32"]["min_cosine"] >= 0.9999
    assert {i.name for i in graph.inputs} == {"input_values", "attention_mask"}


@pytest.mark.parametrize("model_type", ["wav2vec2", "wavlm"])
def test_int8_passes_its_fidelity_gate(encoders, digits, tmp_path, model_type):
    """WavLM: ORT's static QDQ quantises its relative-position buckets into out-of-range
    indices, so that variant cannot run; it fails its gate and a dynamic one is kept."""
    got32 = run_single(encoders[model_type], digits, tmp_path / "fp32")
    options = RunOptions(progress=False, workers=0, runtime="onnxruntime", precision="int8")
    got8 = run_single(
        encoders[model_type], digits, tmp_path / "int8", options=options, tag="-int8-onnxruntime"
    )
    assert got8.keys() == got32.keys()
    cosines = [row_cosines(got32[k][None], got8[k][None])[0] for k in got32]
    assert min(cosines) >= 0.99


# --- Ducho config and CLI -----------------------------------------------------------------------


def test_ducho_audio_block_writes_ducho_layout_and_compact(encoders, digits, tmp_path):
    dataset = tmp_path / "data"
    shutil.copytree(digits, dataset / "audio")
    config = {
        "dataset_path": str(dataset),
        "audio": {
            "items": {
                "input_path": "audio",
                "output_path": "audio_features",
                "model": [
                    {
                        "model_name": str(encoders["wav2vec2"]),
                        "output_layers": 1,
                        "backend": "transformers",
                        "batch_size": 4,
                    }
                ],
            }
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    extract_config(path, (), QUIET)
    ducho = dataset / "audio_features" / "transformers" / Path(encoders["wav2vec2"]).name / "1"
    files = sorted(ducho.glob("*.npy")) if ducho.is_dir() else []
    assert len(files) == len(list(digits.iterdir()))
    compact = features_by_id(
        dataset
        / "ducho-fast"
        / "audio"
        / "items"
        / "transformers"
        / encoders["wav2vec2"].name
        / "1"
    )
    for file in files:
        array = np.load(file)
        assert array.shape == (1, 32) and array.dtype == np.float32
        np.testing.assert_array_equal(array[0], compact[file.stem])


def test_torchaudio_pipeline_names_the_transformers_checkpoint(tmp_path):
    from ducho_fast.config import parse_config

    config = {
        "dataset_path": str(tmp_path),
        "audio": {
            "items": {
                "input_path": "a",
                "output_path": "b",
                "model": [{"model_name": "WAV2VEC2_BASE", "output_layers": 7, "backend": "torch"}],
            }
        },
    }
    with pytest.raises(ConfigError, match="torchaudio") as info:
        parse_config(config)
    assert "facebook/wav2vec2-base" in str(info.value) and "torchaudio" in str(info.value)


def test_unknown_layer_and_missing_pooler_are_clear(encoders):
    from ducho_fast.core.errors import ModelLoadError
    from ducho_fast.models.registry import load_model
    from ducho_fast.models.spec import ModelRef

    with pytest.raises(ModelLoadError, match=r"hidden_states 0\.\.2"):
        load_model(ModelRef(str(encoders["wav2vec2"]), layers=("9",)))
    with pytest.raises(ModelLoadError, match="no pooler"):
        load_model(ModelRef(str(encoders["wav2vec2"]), layers=("pooler_output",)))


def test_cli_config_free_audio(encoders, digits, tmp_path):
    from click.testing import CliRunner

    from ducho_fast.cli import main

    out = tmp_path / "out"
    args = ["extract", "--model", str(encoders["hubert"]), "--audio", str(digits)]
    args += ["--output", str(out), "--layer", "1", "--batch-size", "4", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    got = features_by_id(out / encoders["hubert"].name / "hidden_states.1")
    assert len(got) == len(list(digits.iterdir()))


def test_load_encodes_paths_and_waveforms_like_extract(encoders, digits, tmp_path):
    import ducho_fast

    model = encoders["wavlm"]
    job = SingleModelJob(model, tmp_path / "out", audio=digits, layers=("last_hidden_state",))
    extract_single(job, QUIET)
    got = features_by_id(tmp_path / "out" / model.name / "last_hidden_state")
    encoder = ducho_fast.load(model)  # exported as extract exports it: last_hidden_state
    paths = sorted(digits.iterdir())
    rows = encoder.encode_audio(paths, batch_size=3)
    for path, row in zip(paths, rows, strict=True):
        np.testing.assert_allclose(row, got[path.stem], rtol=0, atol=1e-5)
    wave = decode_audio(paths[0], RATE)
    one = encoder.encode_audio(wave)
    np.testing.assert_allclose(one[0], rows[0], rtol=0, atol=1e-6)


def test_missing_audio_library_says_which_extra_to_install(monkeypatch, formats):
    import sys

    from ducho_fast.core.audio import decode_audio as decode

    folder, _ = formats
    monkeypatch.setitem(sys.modules, "soxr", None)  # import soxr now raises ImportError
    with pytest.raises(ConfigError, match=r"ducho-fast\[audio\]"):
        decode(folder / "float.wav", RATE)  # 48 kHz: needs resampling


def test_bench_audio_suite_reports_real_time_factor_and_fidelity(encoders, digits, tmp_path):
    """The bench's audio suite through the CLI: every job's figures, and ducho-fast's features
    equal to the Ducho-style loop's (no speed is asserted)."""
    import json

    from click.testing import CliRunner

    from ducho_fast.cli import main

    args = ["bench", "--model", str(encoders["wav2vec2"]), "--audio", str(digits), "--limit", "3"]
    args += ["--runtimes", "onnxruntime", "--precisions", "fp32", "--repeats", "1"]
    args += ["--batch-sizes", "2", "--workers", "0", "--output", str(tmp_path), "--label", "a"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    (found,) = json.loads((tmp_path / "a.json").read_text())["sets"]
    assert found["clips"] == 3 and found["audio_seconds"] > 0
    job = found["jobs"]["onnxruntime:fp32"]
    assert job["rtf"] > 0 and job["min_cosine_vs_ducho_style"] >= 0.9999
    assert "real-time factor" in (tmp_path / "a.md").read_text()


def test_sizing_the_sweep_never_waits_on_a_fifo(tmp_path):
    """The batch sweep and the auto measurement size their inputs from a few of the run's
    clips: a FIFO among them (which would block a read forever) is skipped at once."""
    import os
    import threading

    from ducho_fast.core.records import Item
    from ducho_fast.modalities import modality
    from ducho_fast.modalities.base import Feed

    from .test_faults import FifoGuard

    fifo = tmp_path / "x.wav"
    os.mkfifo(fifo)
    guard = FifoGuard(fifo)
    spec = AudioPreprocessSpec(RATE, True, True, (10, 8, 8, 8), (5, 4, 4, 4))
    try:
        made = []
        worker = threading.Thread(
            target=lambda: made.append(
                modality("audio").sweep_inputs(Feed("a", spec), [Item("x", str(fifo))])
            )
        )
        worker.start()
        worker.join(30)
    finally:
        guard.close()
    assert made and not guard.had_to  # returned without anyone opening the FIFO's write end
    assert made[0](2)["input_values"].shape[0] == 2
