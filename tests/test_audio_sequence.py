"""Audio `pooling: none`: Ducho's `(1, T, D)` frame sequence per clip, equal to eager
transformers on the clip alone; long clips stitched from windows by the documented rule;
resume, reruns, deleted files and damage handled by the engine's state as for rows; formats,
fusions and models that cannot hold sequences refused before any work. Tiny seeded encoders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ducho_fast.api import RunOptions, extract_config
from ducho_fast.core.audio import decode_audio
from ducho_fast.core.errors import ConfigError
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.modalities.audio import AudioPreprocessSpec, stitch, window_bounds
from ducho_fast.models.synthetic import save_audio_encoder

from .synthetic import tone
from .test_audio import RATE, eager_model

sf = pytest.importorskip("soundfile")

QUIET = RunOptions(progress=False, workers=0)
LAYER = 1


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict[str, Path]:
    """A masked encoder (layer-normalised, as the large models) and wav2vec2-base's
    group-normalised one, which takes no mask and changes when padded."""
    root = tmp_path_factory.mktemp("sequence-encoders")
    return {
        "masked": save_audio_encoder(root / "w2v-layer", "wav2vec2", "layer"),
        "unmasked": save_audio_encoder(root / "w2v-group", "wav2vec2", "group"),
    }


def eager_frames(model_dir: Path, wave: np.ndarray, layer: int = LAYER) -> np.ndarray:
    """Eager transformers on one clip alone, its own feature extractor: `(T, D)`."""
    import torch

    extractor, model = eager_model(model_dir)
    inputs = extractor(wave, sampling_rate=RATE, return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs, output_hidden_states=True)
    return out.hidden_states[layer][0].numpy()


def assert_frames_equal(expected: np.ndarray, got: np.ndarray, what: str = "") -> None:
    """Frame by frame: cosine >= 0.9999 and max-abs within the fp32 gate."""
    assert got.dtype == np.float32 and got.shape == expected.shape, (what, got.shape)
    assert row_cosines(expected, got).min() >= 0.9999, what
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max()), what


def write_config(dataset: Path, clips: Path, model: Path, entry: dict | None = None, **top) -> Path:
    """A Ducho `audio` block over `clips` with `pooling: none` (Ducho's default format)."""
    dataset.mkdir(parents=True, exist_ok=True)
    if not (dataset / "audio").exists():
        (dataset / "audio").symlink_to(clips)
    model_entry = {
        "model_name": str(model),
        "output_layers": LAYER,
        "backend": "transformers",
        "pooling": "none",
        "batch_size": 4,
        **(entry or {}),
    }
    block = {"input_path": "audio", "output_path": "audio_features", "model": [model_entry]}
    config = {"dataset_path": str(dataset), "workers": 0, **top, "audio": {"items": block}}
    path = dataset / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def ducho_folder(dataset: Path, model: Path, tag: str = "") -> Path:
    return dataset / "audio_features" / "transformers" / (model.name + tag) / str(LAYER)


def sequences_in(folder: Path) -> dict[str, np.ndarray]:
    """Each `<id>.npy` of Ducho's layout, checked to be `(1, T, D)`, as `(T, D)`."""
    found = {}
    for path in sorted(folder.glob("*.npy")):
        array = np.load(path)
        assert array.ndim == 3 and array.shape[0] == 1, (path.name, array.shape)
        found[path.stem] = array[0]
    return found


def copy_clips(source: Path, folder: Path) -> Path:
    shutil.copytree(source, folder)
    return folder


# --- values -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["masked", "unmasked"])
def test_each_clip_gets_its_frames_as_eager_transformers_gives_them(
    encoders, digits, tmp_path, kind
):
    """Clips of different lengths batched together: each file holds the layer's frames of
    the clip alone (T as eager gives it, no padding frames), so padding never leaks."""
    model = encoders[kind]
    dataset = tmp_path / "data"
    extract_config(write_config(dataset, digits, model), options=QUIET)
    got = sequences_in(ducho_folder(dataset, model))
    paths = sorted(digits.iterdir())
    assert set(got) == {p.stem for p in paths}
    lengths = {len(decode_audio(p, RATE)) for p in paths}
    assert len(lengths) > 1  # the batches mix lengths
    for path in paths:
        expected = eager_frames(model, decode_audio(path, RATE))
        assert_frames_equal(expected, got[path.stem], path.name)
    assert not (dataset / "ducho-fast" / "audio").exists()  # Ducho's default: its layout only


@pytest.mark.parametrize("kind", ["masked", "unmasked"])
def test_batched_equals_one_by_one(encoders, digits, tmp_path, kind):
    model = encoders[kind]
    runs = {}
    for batch in (8, 1):
        dataset = tmp_path / f"b{batch}"
        extract_config(write_config(dataset, digits, model, {"batch_size": batch}), options=QUIET)
        runs[batch] = sequences_in(ducho_folder(dataset, model))
    assert runs[8].keys() == runs[1].keys()
    for item_id, frames in runs[1].items():
        assert runs[8][item_id].shape == frames.shape
        np.testing.assert_allclose(runs[8][item_id], frames, rtol=0, atol=1e-5, err_msg=item_id)


# --- long clips -----------------------------------------------------------------------------------


def test_stitch_takes_each_frame_from_the_window_where_it_is_furthest_from_an_edge():
    """Windows of 10 frames at clip frames 0, 7 and 12: overlaps 7..9 and 12..16."""
    parts = [np.full((10, 2), k, np.float32) for k in range(3)]
    parts[-1] = parts[-1][:8]  # the last window is shorter: clip frames 12..19
    got = stitch(parts, [0, 7, 12])[:, 0].astype(int).tolist()
    # overlap 7..9: frame 8 is 1 from window 0's end and 1 from window 1's start (a tie:
    # the earlier wins), so 0..8 from window 0; overlap 12..16: 14 is the tie, so 9..14 from
    # window 1 and 15..19 from window 2.
    assert got == [0] * 9 + [1] * 6 + [2] * 5
    with pytest.raises(ValueError, match="do not overlap"):
        stitch([parts[0], parts[1]], [0, 11])


def test_a_long_clip_is_stitched_from_its_windows(encoders, tmp_path):
    """A 45.8 s clip: T is the whole clip's frame count, and every frame equals eager on the
    window that produced it (the windows and the split are the documented rule)."""
    model = encoders["masked"]
    clips = tmp_path / "long"
    clips.mkdir()
    sf.write(clips / "dance.wav", tone(45.8, RATE, seed=3)[:, 0] + 0.0, RATE, subtype="FLOAT")
    dataset = tmp_path / "data"
    extract_config(write_config(dataset, clips, model, {"batch_size": 2}), options=QUIET)
    got = sequences_in(ducho_folder(dataset, model))["dance"]
    wave = decode_audio(clips / "dance.wav", RATE)
    spec = AudioPreprocessSpec(RATE, True, True, (10, 8, 8, 8), (5, 4, 4, 4), pooling="none")
    assert len(got) == spec.frames(len(wave))  # the whole clip's T
    bounds = window_bounds(len(wave), spec)
    assert len(bounds) == 3 and bounds[-1][1] == len(wave)
    assert all(start % spec.frame_stride == 0 for start, _ in bounds)
    firsts = [start // spec.frame_stride for start, _ in bounds]
    windows = [eager_frames(model, wave[start:end]) for start, end in bounds]
    cuts = [
        (firsts[k + 1] + firsts[k] + len(windows[k]) - 1) // 2 + 1 for k in range(len(bounds) - 1)
    ]
    edges = [0, *cuts, len(got)]
    for k, frames in enumerate(windows):
        lo, hi = edges[k], edges[k + 1]
        taken = frames[lo - firsts[k] : hi - firsts[k]]
        assert_frames_equal(taken, got[lo:hi], f"window {k}")
        # far from any seam (the middle of what the window gave): the same frames again
        middle = slice((lo + hi) // 2 - 5, (lo + hi) // 2 + 5)
        assert_frames_equal(frames[middle.start - firsts[k] : middle.stop - firsts[k]], got[middle])
    whole = eager_frames(model, wave)  # one whole-clip pass: the same T, other context
    assert whole.shape == got.shape and not np.allclose(whole, got, atol=1e-3)


def test_the_window_and_stitch_rule_is_part_of_the_fingerprint(encoders):
    from ducho_fast.models.spec import ModelRef
    from ducho_fast.resolve import open_model
    from ducho_fast.runtime.table import RuntimeChoice

    torch_fp32 = RuntimeChoice("torch", "fp32")
    mean = open_model(ModelRef(str(encoders["masked"]), layers=("1",)), "audio", torch_fp32)
    none = open_model(
        ModelRef(str(encoders["masked"]), layers=("1",), pooling="none"), "audio", torch_fp32
    )
    assert "pooling" not in mean.fingerprint["preprocess"]  # pooled outputs' state is kept
    assert none.fingerprint["preprocess"]["pooling"] == "none"
    assert "middle" in none.fingerprint["preprocess"]["stitch"]
    assert none.sequence and not mean.sequence


# --- resume and reruns ----------------------------------------------------------------------------


class Interrupted(Exception):
    pass


def interrupt_after(monkeypatch, commits: int) -> None:
    """The run dies after `commits` shards committed (as a kill between two shards)."""
    from ducho_fast.engine.state import ShardStore

    real = ShardStore.commit
    done = []

    def commit(self, *args, **kwargs):
        if len(done) == commits:
            raise Interrupted("killed")
        real(self, *args, **kwargs)
        done.append(1)

    monkeypatch.setattr(ShardStore, "commit", commit)


def test_an_interrupted_run_resumes_without_redoing_committed_shards(
    encoders, digits, tmp_path, monkeypatch
):
    model = encoders["masked"]
    reference = tmp_path / "reference"
    extract_config(write_config(reference, digits, model), options=QUIET)
    dataset = tmp_path / "data"
    config = write_config(dataset, digits, model, {"batch_size": 2}, shard_size=2)
    interrupt_after(monkeypatch, 2)
    with pytest.raises(Interrupted):
        extract_config(config, options=QUIET)
    monkeypatch.undo()
    assert len(sequences_in(ducho_folder(dataset, model))) == 4  # two shards of two
    (result,) = extract_config(config, options=QUIET)
    assert result.metrics["items"] == len(list(digits.iterdir())) - 4  # the rest only
    want = sequences_in(ducho_folder(reference, model))
    got = sequences_in(ducho_folder(dataset, model))
    assert got.keys() == want.keys()
    for item_id, frames in want.items():
        np.testing.assert_allclose(got[item_id], frames, rtol=0, atol=1e-5, err_msg=item_id)


def test_reruns_recompute_a_changed_clip_only_and_rewrite_deleted_files(encoders, digits, tmp_path):
    model = encoders["unmasked"]
    clips = copy_clips(digits, tmp_path / "clips")
    dataset = tmp_path / "data"
    config = write_config(dataset, clips, model, shard_size=3)
    extract_config(config, options=QUIET)
    folder = ducho_folder(dataset, model)
    before = sequences_in(folder)
    changed, deleted, removed = sorted(before)[:3]
    (clip,) = clips.glob(f"{changed}.*")
    sf.write(clip, tone(0.9, 8000, seed=7), 8000)  # another clip, another length
    (folder / f"{deleted}.npy").unlink()
    (removed_clip,) = clips.glob(f"{removed}.*")
    removed_clip.unlink()
    (result,) = extract_config(config, options=QUIET)
    assert result.metrics["items"] == 1  # the changed clip alone
    after = sequences_in(folder)
    assert set(after) == set(before) - {removed}  # the removed clip's file is discarded
    assert_frames_equal(eager_frames(model, decode_audio(clip, RATE)), after[changed])
    assert after[changed].shape != before[changed].shape
    for item_id in set(after) - {changed}:
        np.testing.assert_array_equal(after[item_id], before[item_id])  # rewritten: deleted
    from ducho_fast.engine.state import committed_output

    (state,) = {path.parent for path in dataset.rglob("run.json")}
    with pytest.raises(ConfigError, match="cannot be read as rows"):  # fusion's reader
        committed_output(state, f"{model.name}/{LAYER}")


@pytest.mark.parametrize("damage", ["features truncated", "frame counts edited"])
def test_damaged_sequence_state_is_redone(encoders, digits, tmp_path, damage):
    model = encoders["masked"]
    dataset = tmp_path / "data"
    config = write_config(dataset, digits, model, shard_size=2)
    extract_config(config, options=QUIET)
    before = sequences_in(ducho_folder(dataset, model))
    (state,) = {path.parent for path in dataset.rglob("run.json")}
    if damage == "features truncated":
        shard = sorted((state / "features").rglob("shard-*.npy"))[1]
        shard.write_bytes(shard.read_bytes()[:-8])
    else:
        marker = state / "shard-00001.json"
        data = json.loads(marker.read_text())
        (name,) = data["frames"]
        data["frames"][name][0] += 1  # no longer adds up to the shard's rows
        marker.write_text(json.dumps(data))
    (result,) = extract_config(config, options=QUIET)
    assert result.metrics["items"] == 2 and result.succeeded == len(before)
    after = sequences_in(ducho_folder(dataset, model))
    for item_id, frames in before.items():
        np.testing.assert_allclose(after[item_id], frames, rtol=0, atol=1e-5)


# --- refusals ---------------------------------------------------------------------------------


def parse(tmp_path: Path, entry: dict | None = None, **top):
    from ducho_fast.config import parse_config

    model = {"model_name": "m", "output_layers": 1, "backend": "transformers", "pooling": "none"}
    block = {"input_path": "a", "output_path": "b", "model": [{**model, **(entry or {})}]}
    return parse_config({"dataset_path": str(tmp_path), **top, "audio": {"items": block}})


@pytest.mark.parametrize("output_format", ["compact", "parquet", "both", "ducho,parquet"])
def test_formats_of_one_row_per_item_are_refused(tmp_path, output_format):
    with pytest.raises(ConfigError, match=r"audio\.items\.model\[0\]\.pooling") as info:
        parse(tmp_path, output_format=output_format)
    assert "output_format: ducho" in str(info.value)
    parse(tmp_path, output_format="ducho")  # Ducho's layout holds sequences
    parse(tmp_path)  # and Ducho's default format writes it


def test_fusion_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"model\[0\]\.fusion.*pooling: mean"):
        parse(tmp_path, {"fusion": "concat"})


def test_a_sequence_output_cannot_reach_a_row_sink_or_be_read_as_rows(tmp_path):
    """Below the config: the seam itself refuses (an API caller, a fusion of such a state)."""
    from ducho_fast.engine.sinks import LayerOutput

    with pytest.raises(ConfigError, match="output_format: ducho"):
        LayerOutput("m/1", {"ducho": tmp_path / "d", "compact": tmp_path / "c"}, sequence=True)


def test_handoff_and_inspect_never_flatten_frame_sequences(tmp_path):
    """Equal-length clips give equal-size files: read as rows they would pass as T*D vectors."""
    from ducho_fast.core.errors import InputError
    from ducho_fast.outputs import read_output

    for item in ("a", "b"):
        np.save(tmp_path / f"{item}.npy", np.ones((1, 5, 4), np.float32))
    with pytest.raises(InputError, match=r"a.npy holds a \(1, T, D\) frame sequence"):
        read_output(tmp_path, "ducho")


@pytest.fixture(scope="module")
def spectrogram_models(tmp_path_factory) -> dict[str, Path]:
    from .audio_models import save_ast, save_clap

    root = tmp_path_factory.mktemp("spectrogram")
    return {"ast": save_ast(root / "ast"), "clap": save_clap(root / "clap")}


@pytest.mark.parametrize(
    ("model", "layer", "says"),
    [
        ("ast", "last_hidden_state", "model_type audio-spectrogram-transformer"),
        ("ast", "pooler_output", "model_type audio-spectrogram-transformer"),
        ("clap", "audio_embeds", "model_type clap"),
    ],
)
def test_models_without_frame_sequences_are_refused_before_any_work(
    spectrogram_models, digits, tmp_path, model, layer, says
):
    dataset = tmp_path / "data"
    path = spectrogram_models[model]
    config = write_config(dataset, digits, path, {"output_layers": layer})
    with pytest.raises(ConfigError) as info:
        extract_config(config, options=QUIET)
    message = str(info.value)
    assert "\n" not in message and says in message and "wav2vec2 family" in message
    assert "model[0].model_name" in message
    assert not (dataset / "audio_features").exists()  # nothing ran


def test_pooling_none_on_a_pooled_layer_or_another_family_is_refused_when_loading(encoders):
    from ducho_fast.core.errors import ModelLoadError
    from ducho_fast.models.registry import load_model
    from ducho_fast.models.spec import ModelRef

    with pytest.raises(ModelLoadError, match="pooled layer"):
        load_model(ModelRef(str(encoders["masked"]), layers=("audio_embeds",), pooling="none"))


# --- export -------------------------------------------------------------------------------------


def test_export_has_dynamic_batch_and_frame_axes_and_is_validated(encoders, digits, tmp_path):
    import ducho_fast
    from ducho_fast.api import export
    from ducho_fast.artifact.manifest import read_manifest
    from ducho_fast.exporter.api import ExportConfig
    from ducho_fast.models.spec import ModelRef

    model = encoders["masked"]
    ref = ModelRef(str(model), layers=("1",), pooling="none")
    folder = export(ExportConfig(ref, tmp_path / "artifact"))
    graph = read_manifest(folder).graph("audio")
    (output,) = graph.outputs
    assert len(output.shape) == 3 and not isinstance(output.shape[0], int)
    assert not isinstance(output.shape[1], int) and output.shape[2] == 32
    cases = {c["case"] for c in graph.validation["fp32"]["cases"]}
    assert {"batch=3,len=0.5s", "batch=3,len=3.7s", "batch=3,len=10s"} <= cases
    assert graph.validation["fp32"]["passed"] and graph.preprocess["pooling"] == "none"
    paths = sorted(digits.iterdir())
    got = ducho_fast.load(folder).encode_audio(paths, batch_size=3)  # one (T, D) per clip
    assert got.dtype == object and len(got) == len(paths)
    for path, frames in zip(paths, got, strict=True):
        assert_frames_equal(eager_frames(model, decode_audio(path, RATE)), frames, path.name)


def test_an_artifact_of_the_other_pooling_is_refused(encoders, digits, tmp_path):
    from ducho_fast.api import export
    from ducho_fast.exporter.api import ExportConfig
    from ducho_fast.models.spec import ModelRef

    folder = export(ExportConfig(ModelRef(str(encoders["masked"]), layers=("1",)), tmp_path / "a"))
    config = write_config(tmp_path / "data", digits, folder)
    with pytest.raises(ConfigError, match="exported with pooling mean"):
        extract_config(config, options=QUIET)


def test_int8_passes_its_fidelity_gate_frame_by_frame(encoders, digits, tmp_path):
    model = encoders["masked"]
    fp32, int8 = tmp_path / "fp32", tmp_path / "int8"
    extract_config(write_config(fp32, digits, model), options=QUIET)
    options = RunOptions(progress=False, workers=0, runtime="onnxruntime", precision="int8")
    extract_config(write_config(int8, digits, model), options=options)
    want = sequences_in(ducho_folder(fp32, model))
    got = sequences_in(ducho_folder(int8, model, "-int8-onnxruntime"))
    assert got.keys() == want.keys()
    for item_id, frames in want.items():
        assert row_cosines(frames, got[item_id]).min() >= 0.99
