"""Where Ducho's behaviour is the spec: text cleaning, folder names, torch preprocessing, and
the plain `transformers` text backend (a named attribute of AutoModel's output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ducho_fast.api import RunOptions, extract_config
from ducho_fast.config import load_config
from ducho_fast.core.clear_text import clear_text
from ducho_fast.core.errors import ConfigError, DuchoFastError
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.ducho_plan import model_folder, torch_model_ref

QUIET = RunOptions(progress=False)


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("Hello, World! It's 5 o'clock", "Hello , World ! It 's five o clock"),
        ("don't   stop (now)?", "do n't stop ( now ) ? "),  # trailing space kept
        ("Crème 3 4", "Cr me three 4"),  # non-ASCII out; digits spelled between spaces
        ("(Soft) jersey", " ( Soft ) jersey"),  # Ducho neither strips nor lowercases
        ("wait.......really", "wait ... really"),
        ("Made in U.S.A. today", "Made in U.S.A. today"),
        ("we're, they'll", "we 're , they 'll"),
    ],
)
def test_clear_text_follows_duchos_rules(raw, cleaned):
    assert clear_text(raw) == cleaned


@pytest.mark.parametrize(
    ("name", "modality", "folder"),
    [
        ("ResNet50", "visual", "ResNet50"),
        ("./demos/MMFashion.pt", "visual", "MMFashion"),
        ("google/vit-base-patch16-224-in21k", "visual", "vit-base-patch16-224-in21k"),
        (
            "sentence-transformers/all-mpnet-base-v2",
            "textual",
            "sentence-transformers/all-mpnet-base-v2",
        ),
        ("openai/clip-vit-base-patch32", "visual_textual", "openai/clip-vit-base-patch32"),
        ("/models/my-bert", "textual", "my-bert"),
    ],
)
def test_model_folders_are_named_as_ducho_names_them(name, modality, folder):
    assert model_folder(name, modality) == folder


def entry(tmp_path: Path, **model) -> object:
    config = {
        "dataset_path": str(tmp_path),
        "visual": {
            "items": {
                "input_path": "images",
                "output_path": "out",
                "model": [{"model_name": "resnet18", "backend": "torch", **model}],
            }
        },
    }
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path).visual.items.model[0]


def test_torch_preprocessing_defaults_to_tensor_only(tmp_path):
    ref = torch_model_ref(entry(tmp_path, reshape=[200, 100]), "image")
    assert ref.image_size == (100, 200)  # reshape is PIL's (width, height)
    assert ref.mean == (0.0, 0.0, 0.0) and ref.std == (1.0, 1.0, 1.0)
    zscore = torch_model_ref(entry(tmp_path, preprocessing="zscore"), "image")
    assert zscore.mean == (0.485, 0.456, 0.406) and zscore.image_size == (224, 224)
    custom = torch_model_ref(
        entry(tmp_path, preprocessing="zscore", mean=[0.5] * 3, std=[0.25] * 3), "image"
    )
    assert custom.mean == (0.5,) * 3 and custom.std == (0.25,) * 3


def test_mean_and_std_need_zscore(tmp_path):
    with pytest.raises(ConfigError, match="zscore"):
        entry(tmp_path, mean=[0.5] * 3, std=[0.25] * 3)


@pytest.fixture
def text_dataset(tmp_path) -> Path:
    rows = [
        ("a1", "Soft jersey top with a round neck"),
        ("a2", "Trousers"),
        ("a3", "Long dress in woven fabric with a V-neck, buttons down the front " * 3),
        ("a4", "Knitted jumper"),
        ("a5", "Short-sleeved shirt in cotton with a collar"),
    ]
    (tmp_path / "items.tsv").write_text(
        "article_id\tdesc\n" + "".join(f"{i}\t{t}\n" for i, t in rows)
    )
    return tmp_path


def textual_config(dataset: Path, model: Path, layers, runtime: str) -> Path:
    config = {
        "dataset_path": str(dataset),
        "runtime": runtime,
        "cache_dir": str(dataset / "cache"),
        "textual": {
            "items": {
                "input_path": "items.tsv",
                "item_column": "article_id",
                "text_column": "desc",
                "output_path": "textual_embeddings",
                "model": [
                    {
                        "model_name": str(model),
                        "backend": "transformers",
                        "output_layers": layers,
                        "batch_size": 2,
                    }
                ],
            }
        },
    }
    path = dataset / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_transformers_text_backend_saves_pooler_output(text_dataset, tiny_st, runtime):
    from transformers import AutoModel, AutoTokenizer

    bert = tiny_st.parent / "bert"  # a plain BertModel (with pooler) and its tokenizer
    extract_config(textual_config(text_dataset, bert, "pooler_output", runtime), options=QUIET)
    folder = text_dataset / "textual_embeddings" / "transformers" / "bert" / "pooler_output"
    tokenizer, model = AutoTokenizer.from_pretrained(bert), AutoModel.from_pretrained(bert)
    lines = (text_dataset / "items.tsv").read_text().splitlines()[1:]
    ids, texts = zip(*(line.split("\t") for line in lines), strict=True)
    with torch.inference_mode():  # Ducho: batch_encode_plus(padding=True, truncation=True)
        tokens = tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        expected = model(**tokens).pooler_output.numpy()
    got = np.concatenate([np.load(folder / f"{i}.npy") for i in ids])
    assert got.shape == expected.shape and np.load(folder / "a1.npy").shape == (1, 32)
    assert row_cosines(expected, got).min() >= 0.9999
    assert np.abs(expected - got).max() <= 1e-4  # Ducho's values, not only its directions


def test_transformers_text_backend_refuses_last_hidden_state(text_dataset, tiny_st):
    bert = tiny_st.parent / "bert"
    path = textual_config(text_dataset, bert, "last_hidden_state", "torch")
    with pytest.raises(DuchoFastError, match="last_hidden_state"):
        extract_config(path, options=QUIET)


def test_interactions_in_duchos_form(tmp_path, tiny_st):
    rows = [
        ("u1", "i1", "Great fit, soft fabric"),
        ("u1", "i2", "Too small"),
        ("u2", "i1", ""),  # empty review: recorded, not fatal
        ("u2", "i3", "Lovely colour!"),
        ("u1", "i1", "Bought it twice"),  # duplicate pair: first kept, recorded
    ]
    (tmp_path / "reviews.tsv").write_text(
        "user\titem\treview\n" + "".join("\t".join(r) + "\n" for r in rows)
    )
    config = {
        "dataset_path": str(tmp_path),
        "runtime": "torch",
        "textual": {
            "interactions": {
                "input_path": "reviews.tsv",
                "output_path": "reviews_embeddings",
                "interaction_columns": ["user", "item"],
                "text_column": "review",
                "model": [
                    {
                        "model_name": str(tiny_st),
                        "backend": "sentence_transformers",
                        "output_layers": 1,
                    }
                ],
            }
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    (result,) = extract_config(path, options=QUIET)
    folder = tmp_path / "reviews_embeddings" / "sentence_transformers" / "st" / "1"
    assert sorted(p.name for p in folder.glob("*.npy")) == [
        "u1__i1.npy",
        "u1__i2.npy",
        "u2__i3.npy",
    ]
    assert {(f.item_id, f.error) for f in result.failures} == {
        ("u2__i1", "empty or missing text"),
        ("u1__i1", "duplicate id (first kept)"),
    }


def test_interactions_need_a_text_column_besides_user_and_item(tmp_path):
    (tmp_path / "r.tsv").write_text("user\titem\nu\ti\n")
    config = {
        "dataset_path": str(tmp_path),
        "textual": {
            "interactions": {
                "input_path": "r.tsv",
                "output_path": "o",
                "interaction_columns": ["user", "item"],
                "model": [{"model_name": "x", "backend": "sentence_transformers"}],
            }
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"give text_column; .*r.tsv has only the columns"):
        extract_config(path, options=QUIET)


def test_a_separate_tokenizer_is_refused_not_ignored(tmp_path):
    with pytest.raises(ConfigError, match="tokenizer_name"):
        entry(tmp_path, tokenizer_name="bert-base-uncased")
    assert entry(tmp_path, tokenizer_name="resnet18").tokenizer_name == "resnet18"


def test_threads_and_unset_batch_size_reach_the_plan(tmp_path):
    from ducho_fast.ducho_plan import build_plan

    (tmp_path / "images").mkdir()
    config = {
        "dataset_path": str(tmp_path),
        "threads": 1,
        "visual": {
            "items": {
                "input_path": "images",
                "output_path": "out",
                "model": [{"model_name": "resnet18", "backend": "torch"}],
            }
        },
    }
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config))
    (task,) = build_plan(load_config(path), tmp_path).passes
    assert task.batch_size is None, "no batch_size in the config: the sweep picks it"
    assert task.models[0].choice.threads == 1
