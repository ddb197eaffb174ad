"""`ducho-fast bench` on a tiny CLIP: the JSON's structure, and every figure really measured."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from ducho_fast.bench import BenchConfig
from ducho_fast.cli import main
from ducho_fast.core.errors import ConfigError


def positive(value) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def bench_run(tiny_clip, skimage_photos, tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("bench")
    images = root / "images"
    images.mkdir()
    for photo in skimage_photos[:6]:
        shutil.copy(photo, images / photo.name)
    texts = root / "texts.tsv"
    rows = [f"item{i}\t{'a long description ' * (i % 7)}red shirt {i}" for i in range(20)]
    texts.write_text("id\ttext\n" + "\n".join(rows) + "\n")
    out = root / "results"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "--model",
            str(tiny_clip),
            "--images",
            str(images),
            "--texts",
            str(texts),
            "--runtimes",
            "torch,onnxruntime,tensorrt",
            "--precisions",
            "fp32",
            "--batch-sizes",
            "4",
            "--repeats",
            "1",
            "--label",
            "tiny",
            "--output",
            str(out),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "tiny.json").read_text()), out


def test_bench_writes_json_table_and_plot(bench_run):
    results, out = bench_run
    assert (out / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "tiny.md").read_text()
    assert "| onnxruntime:fp32 |" in table and "| baseline |" in table
    row = next(line for line in table.splitlines() if line.startswith("| onnxruntime:fp32 |"))
    assert re.search(r"\| \d+\.\d \(\d+\.\d-\d+\.\d\) \|", row), "medians carry their range"
    assert set(results["kinds"]) == {"image", "text"}
    assert positive(results["machine"]["matmul_fp32_gflops"])
    assert results["machine"]["libraries"]["onnxruntime"]


def test_every_figure_is_measured(bench_run):
    results, _ = bench_run
    for kind, data in results["kinds"].items():
        assert data["items"] == (6 if kind == "image" else 20)
        pure = data["pure_inference"]["4"]
        assert positive(pure["flops_per_item"])
        assert set(pure["variants"]) == {"torch:fp32", "onnxruntime:fp32"}
        for figures in pure["variants"].values():
            assert positive(figures["items_per_s"]) and positive(figures["gflops"])
            assert len(figures["seconds"]) == 1 and positive(figures["seconds"][0])
        e2e = data["end_to_end"]
        assert set(e2e) == {"torch:fp32", "onnxruntime:fp32", "baseline"}
        for figures in e2e.values():
            assert figures["items"] == data["items"]
            for key in ("command_items_per_s", "startup_to_first_batch_s", "peak_rss_mib"):
                assert positive(figures[key]), (kind, key, figures[key])
            assert 0 <= figures["inference_wait_share"] <= 1
        assert positive(e2e["onnxruntime:fp32"]["ratio_to_baseline"])


def test_variants_agree_with_eager_and_with_the_ducho_style_baseline(bench_run):
    results, _ = bench_run
    for data in results["kinds"].values():
        for figures in data["pure_inference"]["4"]["variants"].values():
            for output in figures["fidelity"].values():
                assert output["min_cosine"] >= 0.9999
        for name in ("torch:fp32", "onnxruntime:fp32"):
            agreement = data["end_to_end"][name]["cosine_to_baseline"]
            assert agreement["items"] == data["items"]
            assert agreement["min_cosine"] >= 0.9999


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_unrunnable_variants_are_skipped_with_a_reason(bench_run):
    results, _ = bench_run
    for data in results["kinds"].values():
        assert "tensorrt" in data["skipped"]["tensorrt:fp32"].lower()


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="runtime"):
        BenchConfig("m", Path("o"), images=Path("i"), runtimes=("jax",))
    with pytest.raises(ConfigError, match="--images"):
        BenchConfig("m", Path("o"))


def test_transformers_text_baselines_pad_as_named_and_agree(tiny_st, monkeypatch):
    """Ducho's code pads to each batch's longest text; the -512 flavour pads to the maximum.
    Attention masks make both give the same pooler_output."""
    import numpy as np
    import torch
    import transformers

    from ducho_fast.bench.baseline import BaselineJob, text_model

    widths: list[int] = []
    real_load = transformers.AutoModel.from_pretrained

    def recording_load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda _, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
        )
        return model

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", recording_load)
    texts = ["a short one", "a slightly longer product description with more words"]
    features = {}
    for flavour in ("ducho-transformers-text", "ducho-transformers-text-512"):
        encode = text_model(BaselineJob(str(tiny_st), "text", Path("unused"), flavour=flavour))
        with torch.inference_mode():  # as run_texts calls it
            features[flavour] = encode(texts)
    longest, maximum = widths
    limit = transformers.AutoTokenizer.from_pretrained(str(tiny_st)).model_max_length
    assert longest < 20 and maximum == limit  # 512 for BERT-like models; the tiny one is smaller
    np.testing.assert_allclose(*features.values(), rtol=1e-4, atol=1e-5)
