"""The torch-free tokenizer path gives exactly the ids of transformers' AutoTokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

import ducho_fast
from ducho_fast.artifact.manifest import read_manifest
from ducho_fast.core.tokenize import load_tokenizer, transformers_tokenizer
from ducho_fast.exporter.api import ExportConfig
from ducho_fast.models.spec import ModelRef

TEXTS = [
    "",
    "Red dress",
    "  Soft jersey top,  with a ROUND neckline!  ",
    "Crème brûlée — naïve café 東京 🙂",
    "don't stop (now)? it's 5 o'clock...",
    "long " * 400,  # truncated at max length
    "a\tb\nc",
]


@pytest.fixture(scope="module")
def artifacts(tiny_clip, tiny_st, minilm_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tok")
    refs = {
        "clip": ModelRef(str(tiny_clip), task="text"),
        "sentence-transformers": ModelRef(str(tiny_st)),
        "minilm": ModelRef(str(minilm_dir)),
        "bert": ModelRef(str(tiny_st.parent / "bert"), family="hf_text"),
    }
    return {name: ducho_fast.export(ExportConfig(ref, root / name)) for name, ref in refs.items()}


@pytest.mark.parametrize("name", ["clip", "sentence-transformers", "minilm", "bert"])
def test_rust_tokenizer_equals_autotokenizer(artifacts, name):
    folder = artifacts[name]
    manifest = read_manifest(folder)
    max_length = int(manifest.graph("text").preprocess["max_length"])
    tokenizer_dir = folder / manifest.tokenizer_dir
    assert (tokenizer_dir / "tokenizer.json").is_file()
    fast = load_tokenizer(tokenizer_dir, max_length)
    reference = transformers_tokenizer(tokenizer_dir, max_length)
    assert fast.tokenize(TEXTS) == reference.tokenize(TEXTS)
    assert fast.pad_id == reference.pad_id
    assert max(len(ids) for ids in fast.tokenize(TEXTS)) == max_length
