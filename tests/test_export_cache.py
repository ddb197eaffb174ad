"""The export cache and the int8 choice: the same model gets the same artifact and variant."""

from __future__ import annotations

import itertools

import ducho_fast
from ducho_fast import ExportConfig, ModelRef
from ducho_fast.artifact.manifest import read_manifest
from ducho_fast.exporter import api
from ducho_fast.resolve import artifact_folder
from ducho_fast.runtime.table import RuntimeChoice


def test_a_local_model_named_two_ways_shares_one_export(tiny_clip, tiny_resnet, monkeypatch):
    choice = RuntimeChoice()
    monkeypatch.chdir(tiny_clip.parent)
    relative = artifact_folder(ModelRef(tiny_clip.name), choice)
    absolute = artifact_folder(ModelRef(str(tiny_clip)), choice)
    dotted = artifact_folder(ModelRef(f"./{tiny_clip.name}/"), choice)
    assert relative == absolute == dotted
    assert artifact_folder(ModelRef(str(tiny_resnet)), choice) != absolute


def int8_mode(tiny_clip, folder) -> str:
    config = ExportConfig(ModelRef(str(tiny_clip), task="image"), folder, precision="int8")
    return read_manifest(ducho_fast.export(config)).graph("image").quantization


def timings(*seconds: float):
    values = itertools.cycle(seconds)
    return lambda session, inputs: next(values)


def test_the_int8_variant_is_remembered_not_re_timed(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(api, "int8_speed", lambda *args: {})  # times fp32: not a variant
    monkeypatch.setattr(api, "time_session", timings(1.0, 2.0))
    first = int8_mode(tiny_clip, tmp_path / "a")
    monkeypatch.setattr(api, "time_session", timings(2.0, 1.0))  # now the other one is faster
    assert int8_mode(tiny_clip, tmp_path / "b") == first
    monkeypatch.setenv("DUCHO_FAST_CACHE", str(tmp_path / "fresh-cache"))
    assert int8_mode(tiny_clip, tmp_path / "c") != first  # nothing remembered: timing decides
