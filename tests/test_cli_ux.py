"""A user's first hour (#14): one error style, flags that apply or are refused, the Python API's
edges, progress and logs, outputs of two precisions side by side."""

from __future__ import annotations

import shutil
import sys
import types
from pathlib import Path

import click
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner, Result

from ducho_fast.api import RunOptions
from ducho_fast.cli import main
from ducho_fast.core.errors import ConfigError


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_error_line(result: Result, code: int, *needles: str) -> str:
    """Exit `code`, exactly one line starting `error: `, no traceback, every needle in it."""
    assert result.exit_code == code, result.output
    assert type(result.exception) is SystemExit, repr(result.exception)  # not an escaped error
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def photos(tmp_path, skimage_photos) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in skimage_photos[:3]:
        shutil.copy(photo, folder / photo.name)
    return folder


# --- 1. one error style ----------------------------------------------------------------------


def test_empty_image_folder_is_one_line_before_any_model_opens(tmp_path, tiny_clip):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    result = invoke("extract", "--model", tiny_clip, "--images", tmp_path / "empty", "-o", out)
    assert_one_error_line(result, 1, "has no items (an empty folder", "nothing was run")
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix in {".npy", ".json"}]


def test_nested_image_folder_is_one_line_and_the_subfolder_recorded(tmp_path, tiny_clip, photos):
    nested = tmp_path / "nested"
    shutil.copytree(photos, nested / "sub")
    out = tmp_path / "out"
    result = invoke("extract", "--model", tiny_clip, "--images", nested, "--output", out)
    assert_one_error_line(result, 1, "nothing was extracted", str(out / "failures.tsv"))
    assert "sub" in (out / "failures.tsv").read_text()


def test_mismatched_state_dict_is_one_line_naming_the_keys(tmp_path):
    import torchvision

    state = torchvision.models.resnet18(weights=None).state_dict()
    state.pop("fc.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "weights.pth")
    result = invoke(
        "export", "resnet18", "--weights", tmp_path / "weights.pth", "-o", tmp_path / "a"
    )
    assert_one_error_line(result, 1, "does not fit torchvision resnet18", "fc.weight", "extra")
    assert len(result.output) < 500  # was a 21 KB traceback


def test_pickle_of_an_unimportable_class_is_one_line(tmp_path, monkeypatch):
    module = types.ModuleType("user_models_gone")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x)

    Net.__module__ = module.__name__
    Net.__qualname__ = "Net"
    module.Net = Net
    monkeypatch.setitem(sys.modules, module.__name__, module)
    torch.save(Net(), tmp_path / "net.pt")
    monkeypatch.delitem(sys.modules, module.__name__)
    result = invoke("export", tmp_path / "net.pt", "--trust-pickle", "-o", tmp_path / "a")
    assert_one_error_line(result, 1, "could not be unpickled", "user_models_gone", "PYTHONPATH")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["bench", "--model", "x", "--batch-sizes", "abc"], "'--batch-sizes'"),
        (["bench", "--model", "x", "--batch-sizes", "8,0"], "at least 1"),
        (["extract", "--model", "x", "--images", ".", "-o", "o", "--workers", "-1"], "--workers"),
        (["extract", "--model", "x", "--images", ".", "-o", "o", "--shard-size", "-5"], "shard"),
        (["extract", "--model", "x"], "give --config FILE"),
        (["extract", "--nope"], "--nope"),
        (["expor"], "No such command"),
    ],
    ids=["batch-sizes-abc", "batch-size-0", "workers", "shard-size", "no-input", "option", "cmd"],
)
def test_usage_errors_are_one_line_exit_2(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = assert_one_error_line(invoke(*args), 2, needle)
    assert "--help" in line  # what to do


@pytest.mark.parametrize(
    "options",
    [
        {"workers": -1},
        {"shard_size": -5},
        {"shard_size": 0},
        {"item_timeout": 0},
        {"threads": -2},
        {"min_cosine": 1.5},
    ],
)
def test_run_options_out_of_range_fail_at_once(options):
    name = next(iter(options))
    with pytest.raises(ConfigError, match=name):
        RunOptions(**options)


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(
    tmp_path, photos, monkeypatch
):
    import ducho_fast.api

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(ducho_fast.api, "extract_single", broken)
    args = ["extract", "--model", "m", "--images", photos, "--output", tmp_path / "o"]
    line = assert_one_error_line(invoke(*args), 1, "unexpected ZeroDivisionError: a bug")
    assert "--debug" in line
    debug = invoke("--debug", *args)
    assert isinstance(debug.exception, ZeroDivisionError)  # raised: click prints the traceback


def test_library_errors_keep_one_line_and_debug_raises(tmp_path):
    bad = tmp_path / "config.yml"
    bad.write_text(
        f"dataset_path: {tmp_path}\ntextual:\n  items:\n    input_path: a.tsv\n"
        "    model:\n      - model_name: m\n"
    )
    line = assert_one_error_line(
        invoke("extract", "--config", bad), 1, "missing required key 'textual.items.output_path'"
    )
    assert "\n" not in line
    assert isinstance(invoke("--debug", "extract", "--config", bad).exception, ConfigError)


# --- 2. flags with --config apply or are refused; every flag documented -------------------------


def text_config(tmp_path: Path, model: Path) -> Path:
    (tmp_path / "items.tsv").write_text("asin\tdescription\n1\tred dress\n2\tblue shoes\n")
    config = {
        "dataset_path": str(tmp_path),
        "textual": {
            "items": {
                "input_path": "items.tsv",
                "item_column": "asin",
                "text_column": "description",
                "output_path": "out",
                "model": [{"model_name": str(model), "backend": "sentence_transformers"}],
            }
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    ("flag", "key"),
    [
        (["--model", "other"], "model.0.model_name"),
        (["--id-column", "asin"], "item_column"),
        (["--text-column", "description"], "text_column"),
        (["--layer", "avgpool"], "output_layers"),
        (["--images", "."], "input_path"),
        (["--weights", "none"], "weights"),
    ],
)
def test_config_free_flags_beside_config_are_refused_naming_the_key(flag, key, tmp_path):
    path = text_config(tmp_path, tmp_path / "no-model-needed")
    result = invoke("extract", "--config", path, *flag)
    assert_one_error_line(result, 2, flag[0], key, "ignored with --config")
    assert not (tmp_path / "out").exists()


def test_batch_size_and_storage_flags_apply_to_a_config(tmp_path):
    from ducho_fast.api import with_options
    from ducho_fast.config import blocks, load_config

    config = load_config(text_config(tmp_path, tmp_path / "m"))
    options = RunOptions(batch_size=3, fp16_storage=True, ducho_ids=True, cache_dir=tmp_path)
    changed = with_options(config, options)
    assert [e.batch_size for _, _, b in blocks(changed) for e in b.model] == [3]
    assert changed.fp16_storage and changed.ducho_ids and changed.cache_dir == str(tmp_path)


def test_every_flag_of_every_command_is_documented():
    undocumented = [
        f"{name} {option.opts[0]}"
        for name, command in main.commands.items()
        for option in command.params
        if isinstance(option, click.Option) and not (option.help or "").strip()
    ]
    assert undocumented == []


def test_config_free_flags_for_ids_and_storage_apply(tmp_path, tiny_clip, photos):
    dotted = tmp_path / "dotted"
    dotted.mkdir()
    for index, photo in enumerate(sorted(photos.iterdir())):
        shutil.copy(photo, dotted / f"item{index}.v2{photo.suffix}")
    out = tmp_path / "out"
    args = ["extract", "--model", tiny_clip, "--images", dotted, "-o", out, "--no-progress"]
    result = invoke(*args, "--ducho-ids", "--fp16-storage", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    folder = out / tiny_clip.name / "image_embeds"
    assert (folder / "ids.txt").read_text().split() == ["item0", "item1", "item2"]
    assert np.load(folder / "features.npy").dtype == np.float16
    assert any((tmp_path / "cache").iterdir())  # the export was cached there


# --- 3. the Python API ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_encoder(tiny_clip):
    import ducho_fast

    return ducho_fast.load(str(tiny_clip))  # a model folder, not an artifact: exported first


def test_load_of_a_model_folder_exports_it_as_extract_does(clip_encoder, tiny_clip):
    from ducho_fast.resolve import artifact_folder
    from ducho_fast.runtime.table import RuntimeChoice

    cached = artifact_folder(ducho_fast_ref(tiny_clip), RuntimeChoice("onnxruntime", "fp32"))
    assert clip_encoder.folder == cached  # the export extract makes and reuses
    assert {g.name for g in clip_encoder.manifest.graphs} == {"image", "text"}


def ducho_fast_ref(model: Path):
    from ducho_fast.models.spec import ModelRef

    return ModelRef(model)  # a Path is accepted and kept as its string


def test_a_string_is_one_text(clip_encoder):
    one = clip_encoder.encode_texts("red dress")
    assert one.shape[0] == 1
    np.testing.assert_allclose(one, clip_encoder.encode_texts(["red dress"]), rtol=1e-6)


def test_one_image_path_is_one_image(clip_encoder, photos):
    path = sorted(photos.iterdir())[0]
    one = clip_encoder.encode_images(str(path))
    assert one.shape[0] == 1
    np.testing.assert_allclose(one, clip_encoder.encode_images([path]), rtol=1e-6)


def test_empty_input_gives_an_empty_array_of_the_right_width(clip_encoder, photos):
    width = clip_encoder.encode_texts(["x"]).shape[1]
    assert clip_encoder.encode_texts([]).shape == (0, width)
    assert clip_encoder.encode_images([]).shape == (0, width)
    assert clip_encoder.encode_images([]).dtype == np.float32


def test_an_unknown_output_names_the_outputs(clip_encoder):
    with pytest.raises(ConfigError, match=r"no output 'pooler'; its outputs: \['text_embeds'\]"):
        clip_encoder.encode_texts(["x"], output="pooler")


def test_paths_may_be_strings_everywhere(tmp_path, tiny_clip, photos):
    import ducho_fast
    from ducho_fast.api import SingleModelJob

    job = SingleModelJob(str(tiny_clip), str(tmp_path / "out"), images=str(photos))
    results = ducho_fast.extract(job, RunOptions(progress=False, workers=0))
    assert results[0].succeeded == 3 and isinstance(job.output, Path)
    config = ducho_fast.ExportConfig(ducho_fast.ModelRef(tiny_clip), str(tmp_path / "artifact"))
    assert config.output_dir == tmp_path / "artifact"


# --- 4. progress, quiet third parties, paths written, resume, run log ------------------------


def test_extract_says_its_stages_every_path_written_and_a_resume(tmp_path, tiny_clip, photos):
    out = tmp_path / "out"
    args = ["extract", "--model", tiny_clip, "--images", photos, "-o", out, "--no-progress"]
    first = invoke(*args, "--cache-dir", tmp_path / "cache")  # a fresh cache: exported now
    assert first.exit_code == 0, first.output
    for stage in ("loading the model", "tracing to ONNX", "validating fp32", "[batch=3"):
        assert stage in first.output
    written = first.output.split("written:")[1]
    for path in (out / tiny_clip.name / "image_embeds", out / "failures.tsv", out / "run.log"):
        assert str(path) in written and path.exists()
    log_text = (out / "run.log").read_text()
    assert "run started" in log_text and "tracing to ONNX" in log_text
    again = invoke(*args, "--cache-dir", tmp_path / "cache")
    assert again.exit_code == 0, again.output
    assert "resumed: all 3 items already done" in again.output
    assert "0.0 items/s" not in again.output and "inference waited" not in again.output
    assert (out / "run.log").read_text().count("run started") == 2  # appended per run


def test_quantizer_noise_stays_off_the_console(tmp_path, tiny_clip, photos):
    """A real process (pytest's own log handlers would hide `WARNING:root` lines here)."""
    import subprocess

    command = [sys.executable, "-m", "ducho_fast.cli", "export", str(tiny_clip), "--task"]
    command += ["image", "--precision", "int8", "--int8-mode", "static"]
    command += ["--sample-images", str(photos), "-o", str(tmp_path / "a")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "quantizing to int8 (static)" in done.stderr  # our stages are shown
    assert "WARNING" not in done.stderr + done.stdout  # ONNX Runtime's quantizer is not


# --- 5. fp32 and int8 outputs side by side -------------------------------------------------


def test_fp32_and_int8_outputs_live_side_by_side(tmp_path, tiny_clip, jpeg_photos):
    config = {
        "dataset_path": str(tmp_path),
        "visual": {
            "items": {
                "input_path": str(jpeg_photos),
                "output_path": "out",
                "model": [{"model_name": str(tiny_clip), "backend": "transformers"}],
            }
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    base = ["extract", "--config", path, "--no-progress", "--workers", "0", "--batch-size", "3"]
    assert invoke(*base).exit_code == 0
    int8 = invoke(*base, "--runtime", "onnxruntime", "--precision", "int8")
    assert int8.exit_code == 0, int8.output  # not refused as "another configuration"
    ducho = tmp_path / "out" / "transformers"
    fp32_dir, int8_dir = ducho / tiny_clip.name, ducho / f"{tiny_clip.name}-int8-onnxruntime"
    fp32_files = sorted(p.name for p in next(fp32_dir.iterdir()).iterdir())
    assert fp32_files == sorted(p.name for p in next(int8_dir.iterdir()).iterdir())
    a = np.load(next(fp32_dir.rglob("p0.npy")))
    b = np.load(next(int8_dir.rglob("p0.npy")))
    assert a.shape == b.shape and not np.array_equal(a, b)  # int8 did not overwrite fp32
    compact = tmp_path / "ducho-fast" / "visual" / "items" / "transformers"
    assert {p.name for p in compact.iterdir()} == {fp32_dir.name, int8_dir.name}
    assert invoke(*base).exit_code == 0  # fp32 again: resumed, not refused


def test_a_mistyped_flag_beside_config_is_named_with_the_closest(tmp_path):
    path = text_config(tmp_path, tmp_path / "m")
    result = invoke("extract", "--config", path, "--batchsize", "2")
    assert_one_error_line(result, 2, "unknown option '--batchsize'", "did you mean --batch-size")


def test_debug_after_the_command_says_where_it_goes(tmp_path):
    path = text_config(tmp_path, tmp_path / "m")
    result = invoke("extract", "--config", path, "--debug")
    assert_one_error_line(result, 2, "--debug goes before the command")
