"""`ducho-fast extract`: Ducho configs end to end, parity with eager, pipelining, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ducho_fast.api import RunOptions, extract_config
from ducho_fast.core.errors import ConfigError
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.core.image import decode_image
from ducho_fast.engine.state import read_failures

QUIET = RunOptions(progress=False)


@pytest.fixture(scope="module")
def hm_dataset(tmp_path_factory, hm_items) -> Path:
    """A dataset folder whose inputs link to the H&M sample (outputs must not land there)."""
    images, items = hm_items
    folder = tmp_path_factory.mktemp("hm")
    (folder / "images").symlink_to(images)
    (folder / "items.tsv").symlink_to(items)
    return folder


def write_config(folder: Path, config: dict) -> Path:
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def load_compact(folder: Path) -> tuple[list[str], np.ndarray]:
    return (folder / "ids.txt").read_text().splitlines(), np.load(folder / "features.npy")


def item_texts(dataset: Path) -> dict[str, str]:
    import csv

    with (dataset / "items.tsv").open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    return {r["article_id"]: r["detail_desc"].strip() for r in rows if r["detail_desc"].strip()}


def ducho_config(dataset: Path, clip: Path, st: Path, minilm: Path, vit: Path, **extra) -> dict:
    return {
        "dataset_path": str(dataset),
        "gpu list": 0,
        "visual": {
            "items": {
                "input_path": "images",
                "output_path": "visual_embeddings",
                "model": [
                    {
                        "model_name": str(vit),
                        "backend": "transformers",
                        "output_layers": "pooler_output",
                        "batch_size": 16,
                    }
                ],
            }
        },
        "textual": {
            "items": {
                "input_path": "items.tsv",
                "item_column": "article_id",
                "text_column": "detail_desc",
                "output_path": "textual_embeddings",
                "model": [
                    {"model_name": str(st), "backend": "sentence_transformers", "output_layers": 1},
                    {
                        "model_name": str(minilm),
                        "backend": "sentence_transformers",
                        "output_layers": 1,
                    },
                ],
            }
        },
        "visual_textual": {
            "items": {
                "input_path": {"visual": "images", "textual": "items.tsv"},
                "item_column": "article_id",
                "text_column": "detail_desc",
                "output_path": {"visual": "visual_embeddings", "textual": "textual_embeddings"},
                "model": [
                    {
                        "model_name": str(clip),
                        "backend": "transformers",
                        "output_layers": 1,
                        "fusion": ["concat", "mean"],
                    }
                ],
            }
        },
        **extra,
    }


@pytest.fixture(scope="module")
def hm_run(hm_dataset, tiny_clip, tiny_st, minilm_dir, tiny_vit, tmp_path_factory):
    config = ducho_config(
        hm_dataset,
        tiny_clip,
        tiny_st,
        minilm_dir,
        tiny_vit,
        cache_dir=str(tmp_path_factory.mktemp("cache")),
        shard_size=40,
    )
    path = write_config(hm_dataset, config)
    return path, extract_config(path, options=QUIET)


def test_ducho_layout_and_compact_format(hm_run, hm_dataset, tiny_clip):
    _, results = hm_run
    by_name = {r.name: r for r in results}
    assert by_name["visual/items"].succeeded == 100
    texts = item_texts(hm_dataset)
    assert by_name["textual/items"].succeeded == len(texts) == 99
    clip_dir = hm_dataset / "visual_embeddings" / "transformers" / tiny_clip.name / "1"
    files = sorted(clip_dir.glob("*.npy"))
    assert len(files) == 100
    one = np.load(files[0])
    assert one.dtype == np.float32 and one.shape == (1, 16)
    ids, features = load_compact(
        hm_dataset
        / "ducho-fast"
        / "visual_textual"
        / "items"
        / "visual"
        / "transformers"
        / tiny_clip.name
        / "1"
    )
    assert ids == sorted(ids) and len(ids) == 100 and features.shape == (100, 16)
    assert np.array_equal(np.load(clip_dir / f"{ids[7]}.npy")[0], features[7])
    failures = read_failures(hm_dataset / "textual_embeddings" / "failures.tsv")
    assert [(f.item_id, f.stage) for f in failures] == [("0578296001", "read")]


def test_clip_features_equal_eager_reference(hm_run, hm_dataset, tiny_clip):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    root = hm_dataset / "ducho-fast" / "visual_textual" / "items"
    image_ids, image_features = load_compact(
        root / "visual" / "transformers" / tiny_clip.name / "1"
    )
    text_ids, text_features = load_compact(root / "textual" / "transformers" / tiny_clip.name / "1")
    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = CLIPImageProcessor.from_pretrained(tiny_clip)
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    images = [decode_image(hm_dataset / "images" / f"{i}.jpg") for i in image_ids[:24]]
    texts = item_texts(hm_dataset)
    with torch.no_grad():  # Ducho: CLIPModel(**processor(text, images, padding=True))
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        tokens = tokenizer(
            [texts[i] for i in text_ids], padding=True, truncation=True, return_tensors="pt"
        )
        ducho = model(pixel_values=pixels, **tokens)
        expected_images, expected_texts = ducho.image_embeds.numpy(), ducho.text_embeds.numpy()
    # Ducho's values, not only its directions: unit-length embeddings, max-abs 1e-4.
    assert np.abs(expected_images - image_features[:24]).max() <= 1e-4
    assert np.abs(expected_texts - text_features).max() <= 1e-4

    fused_root = (
        hm_dataset
        / "ducho-fast"
        / "visual_embeddings_textual_embeddings_{}"
        / "transformers"
        / tiny_clip.name
        / "1"
    )
    ids, concat = load_compact(Path(str(fused_root).format("concat")))
    _, mean = load_compact(Path(str(fused_root).format("mean")))
    assert ids == [i for i in image_ids if i in set(text_ids)]  # joined by id, not position
    rows_i = [image_ids.index(i) for i in ids]
    rows_t = [text_ids.index(i) for i in ids]
    np.testing.assert_array_equal(
        concat, np.hstack([image_features[rows_i], text_features[rows_t]])
    )
    np.testing.assert_allclose(
        mean, (image_features[rows_i] + text_features[rows_t]) / 2, rtol=1e-6
    )
    ducho_fused = hm_dataset / "visual_embeddings_textual_embeddings_mean" / "transformers"
    assert len(list((ducho_fused / tiny_clip.name / "1").glob("*.npy"))) == len(ids)


def test_sentence_transformer_features_equal_encode(hm_run, hm_dataset, minilm_dir, tiny_st):
    from sentence_transformers import SentenceTransformer

    texts = item_texts(hm_dataset)
    for model_dir in (minilm_dir, tiny_st):
        folder = (
            hm_dataset
            / "ducho-fast"
            / "textual"
            / "items"
            / "sentence_transformers"
            / model_dir.name
            / "1"
        )
        ids, features = load_compact(folder)
        expected = SentenceTransformer(str(model_dir), device="cpu").encode([texts[i] for i in ids])
        assert row_cosines(expected, features).min() >= 0.9999
        assert np.abs(expected - features).max() <= 1e-4  # Ducho's values: encode() as Ducho


def test_vision_backbone_equals_eager(hm_run, hm_dataset, tiny_vit):
    from transformers import AutoImageProcessor, AutoModel

    folder = (
        hm_dataset
        / "ducho-fast"
        / "visual"
        / "items"
        / "transformers"
        / tiny_vit.name
        / "pooler_output"
    )
    ids, features = load_compact(folder)
    model = AutoModel.from_pretrained(tiny_vit).eval()
    processor = AutoImageProcessor.from_pretrained(tiny_vit, use_fast=False)
    images = [decode_image(hm_dataset / "images" / f"{i}.jpg") for i in ids[:20]]
    with torch.no_grad():
        expected = model(**processor(images=images, return_tensors="pt")).pooler_output.numpy()
    assert row_cosines(expected, features[:20]).min() >= 0.9999
    scale = max(1.0, float(np.abs(expected).max()))  # the export gate's max-abs rule
    assert np.abs(expected - features[:20]).max() <= 1e-4 * scale


def test_rerun_resumes_without_redoing(hm_run, hm_dataset):
    path, _ = hm_run
    results = extract_config(path, options=QUIET)
    assert all(r.metrics["items"] == 0 for r in results)  # every shard was committed
    assert results[0].succeeded == 100


def test_changed_config_is_refused_unless_overwrite(hm_run, hm_dataset):
    path, _ = hm_run
    with pytest.raises(ConfigError, match="different configuration"):
        extract_config(
            path, ["--visual.items.model.0.output_layers=last_hidden_state"], options=QUIET
        )

    results = extract_config(
        path,
        ["--visual.items.model.0.output_layers=last_hidden_state", "--overwrite=true"],
        options=QUIET,
    )
    assert results[0].succeeded == 100
    layer = hm_dataset / "visual_embeddings" / "transformers"
    assert not list(layer.glob("*/pooler_output/*.npy"))  # old output of that pass replaced
    assert len(list(layer.glob("*/last_hidden_state/*.npy"))) == 100
