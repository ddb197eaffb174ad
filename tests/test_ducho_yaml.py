"""A Ducho user's first hour (#14): Ducho's own configs run as written, from the folder Ducho's
README runs them from (its repository root), with only model names and data swapped for
offline ones, and give Ducho's layout and shapes. Also: Ducho's path rule, keys Ducho ignores,
column defaults, the plan check before any work, trusted pickles, YAML preprocessing never
dropped, `gpu list`, and Ducho's Python entry point."""
# ruff: noqa: E501  (Ducho's configs and run.py, kept as Ducho writes them)

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from torch import nn

from ducho_fast.api import RunOptions, extract_config
from ducho_fast.cli import main
from ducho_fast.config import load_config
from ducho_fast.core.errors import ConfigError
from ducho_fast.ducho_plan import build_plan, checked_plan

QUIET = RunOptions(progress=False, workers=0)
ROOT = Path(__file__).resolve().parents[1]


# --- fixtures: a fake Ducho checkout, offline models under Ducho's names, data --------------


@pytest.fixture(scope="session")
def torch_home(tmp_path_factory) -> Path:
    """torchvision's weight cache with seeded random ResNet-18 weights under the file name
    torchvision downloads, so Ducho's `ResNet18` (default weights) loads offline."""
    from torchvision.models import ResNet18_Weights

    from ducho_fast.models.torchvision_models import seeded_random_model

    home = tmp_path_factory.mktemp("torch-home")
    checkpoint = home / "hub" / "checkpoints" / ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    checkpoint.parent.mkdir(parents=True)
    torch.save(seeded_random_model("resnet18").state_dict(), checkpoint)
    return home


def tiny_fashion_net() -> nn.Module:
    """A stand-in for Ducho's MMFashion.pt (a pickled ResNet): torch classes only, so it
    unpickles anywhere, with an `avgpool` layer as Ducho's demo asks for."""
    torch.manual_seed(0)
    layers = OrderedDict(
        conv=nn.Conv2d(3, 8, 3, stride=2),
        relu=nn.ReLU(),
        avgpool=nn.AdaptiveAvgPool2d(1),
        flatten=nn.Flatten(),
        fc=nn.Linear(8, 4),
    )
    return nn.Sequential(layers).eval()


@pytest.fixture
def repo(tmp_path, monkeypatch, torch_home) -> Path:
    """A fake Ducho checkout, the current folder (Ducho's demos run from its root)."""
    root = tmp_path / "Ducho"
    root.mkdir()
    monkeypatch.chdir(root)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return root


def add_images(dataset: Path, photos: Path, count: int = 4) -> list[str]:
    images = dataset / "images"
    images.mkdir(parents=True, exist_ok=True)
    ids = []
    for photo in sorted(photos.iterdir())[:count]:
        shutil.copy(photo, images / photo.name)
        ids.append(photo.stem)
    return ids


def add_texts(dataset: Path, ids: list[str], header: str = "PRODUCT_ID\tdescription") -> None:
    dataset.mkdir(parents=True, exist_ok=True)
    rows = [f"{i}\tSoft jersey top number {n}, short sleeves" for n, i in enumerate(ids)]
    (dataset / "descriptions.tsv").write_text("\n".join([header, *rows]) + "\n")


def link_model(repo: Path, name: str, folder: Path) -> None:
    """A local folder named like the hub id, so the config keeps Ducho's model name."""
    target = repo / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(folder, target_is_directory=True)


def write_config(repo: Path, demo: str, text: str) -> Path:
    path = repo / "demos" / demo / "config.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def npy(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in sorted(folder.glob("*.npy"))}


def notices(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ducho_fast"]


# --- Ducho's demos, as written ---------------------------------------------------------------


def test_duchos_visual_demo_keeps_spatial_maps(repo, jpeg_photos, caplog):
    """Ducho's demo4 visual row (ResNet50 -> ResNet18: layer4.1.conv3 -> layer4.1.conv2, the
    last conv of its blocks; plus layer4's output): a spatial layer is saved `(1, C, H, W)` as
    Ducho saves it, a pooled one `(1, D)`; `gpu list: 0` runs on the CPU here, with a notice."""
    ids = add_images(repo / "local/data/demo4", jpeg_photos)
    config = write_config(
        repo,
        "demo4",
        """\
        dataset_path: ./local/data/demo4
        gpu list: 0

        visual:
            items:
                input_path: images
                output_path: visual_embeddings
                model: [
                    { model_name: ResNet18,  output_layers: [layer4.1.conv2, layer4.1.relu_1, avgpool], reshape: [224, 224], backend: torch, preprocessing: zscore},
                ]
        """,
    )
    with caplog.at_level(logging.WARNING, logger="ducho_fast"):
        extract_config(Path("./demos/demo4/config.yml"), options=QUIET)
    assert any("the run uses the CPU" in m for m in notices(caplog))
    model = repo / "local/data/demo4/visual_embeddings/torch/ResNet18"
    conv, last, pooled = (npy(model / n) for n in ("layer4.1.conv2", "layer4.1.relu_1", "avgpool"))
    assert sorted(conv) == sorted(last) == sorted(pooled) == sorted(ids)
    assert {a.shape for a in [*conv.values(), *last.values()]} == {(1, 512, 7, 7)}
    assert {a.shape for a in pooled.values()} == {(1, 512)}
    for item in ids:  # avgpool averages layer4's map: its axes are (channel, height, width)
        np.testing.assert_allclose(last[item].mean(axis=(2, 3)), pooled[item], atol=1e-4)
    compact = repo / "local/data/demo4/ducho-fast/visual/items/torch/ResNet18/layer4.1.conv2"
    assert np.load(compact / "features.npy").shape == (len(ids), 512 * 7 * 7)  # compact: flat
    assert config.is_file()


def test_transformers_backend_keeps_the_models_shape(repo, tiny_resnet, jpeg_photos):
    """Ducho's transformers visual backend saves `pooler_output` as the model returns it: a
    ResNet's `(1, C, 1, 1)` (its torch backend squeezes, see above)."""
    from transformers import AutoModel

    link_model(repo, "microsoft/resnet-50", tiny_resnet)
    ids = add_images(repo / "local/data/demo", jpeg_photos, 2)
    config = visual_yaml("./local/data/demo", "microsoft/resnet-50", output_layers="pooler_output")
    config["visual"]["items"]["model"][0]["backend"] = "transformers"
    extract_config(save_yaml(repo / "config.yml", config), options=QUIET)
    arrays = npy(repo / "local/data/demo/out/transformers/resnet-50/pooler_output")
    channels = AutoModel.from_pretrained(tiny_resnet).config.hidden_sizes[-1]
    assert sorted(arrays) == sorted(ids)
    assert {a.shape for a in arrays.values()} == {(1, channels, 1, 1)}


def test_duchos_textual_demo_without_columns(repo, tiny_st, caplog):
    """Ducho's demo4 textual row, unchanged (a local folder stands for the hub model): no
    item_column / text_column, so ids come from the first column and texts from the last, said
    in a notice; Ducho's nested model folder."""
    link_model(repo, "sentence-transformers/all-mpnet-base-v2", tiny_st)
    add_texts(repo / "local/data/demo4", ["p0", "p1", "p2"])
    write_config(
        repo,
        "demo4",
        """\
        dataset_path: ./local/data/demo4
        gpu list: 0

        textual:
            items:
                input_path: descriptions.tsv
                output_path: textual_embeddings
                model: [
                      { model_name: sentence-transformers/all-mpnet-base-v2,  output_layers: 1, clear_text: True, backend: sentence_transformers},
                  ]
        """,
    )
    with caplog.at_level(logging.WARNING, logger="ducho_fast"):
        extract_config("./demos/demo4/config.yml", options=QUIET)
    said = notices(caplog)
    assert any("no item_column; using ['PRODUCT_ID']" in m for m in said)
    assert any("no text_column; using ['description']" in m for m in said)
    folder = (
        repo / "local/data/demo4/textual_embeddings/sentence_transformers"
        / "sentence-transformers/all-mpnet-base-v2/1"
    )  # fmt: skip
    arrays = npy(folder)
    assert sorted(arrays) == ["p0", "p1", "p2"]
    ((one, dim),) = {a.shape for a in arrays.values()}  # Ducho's (1, D)
    assert one == 1 and dim > 1


def test_duchos_visual_textual_demo_with_fusion(repo, tiny_clip, jpeg_photos, caplog):
    """Ducho's demo4 visual_textual row with `fusion: concat` and its `resize` (a key Ducho
    ignores): ignored with a notice that points at `reshape`; image, text and fused files in
    Ducho's folders, `(1, D)` each, the fusion the two side by side."""
    link_model(repo, "openai/clip-vit-base-patch32", tiny_clip)
    dataset = repo / "local/data/demo4"
    ids = add_images(dataset, jpeg_photos, 3)
    add_texts(dataset, ids)
    write_config(
        repo,
        "demo4",
        """\
        dataset_path: ./local/data/demo4
        gpu list: 0

        visual_textual:
            items:
                input_path: {visual: images, textual: descriptions.tsv}
                output_path: {visual: visual_embeddings, textual: textual_embeddings}
                model: [
                    { model_name: openai/clip-vit-base-patch32, fusion: concat, backend: transformers, output_layers: 1, resize: [224, 224]},
                ]
        """,
    )
    with caplog.at_level(logging.WARNING, logger="ducho_fast"):
        extract_config("./demos/demo4/config.yml", options=QUIET)
    assert any(
        "'visual_textual.items.model[0].resize' ignored" in m and "did you mean 'reshape'?" in m
        for m in notices(caplog)
    )
    tail = Path("transformers/openai/clip-vit-base-patch32/1")
    image = npy(dataset / "visual_embeddings" / tail)
    text = npy(dataset / "textual_embeddings" / tail)
    fused = npy(dataset / "visual_embeddings_textual_embeddings_concat" / tail)
    assert sorted(image) == sorted(text) == sorted(fused) == sorted(ids)
    dim = image[ids[0]].shape[1]
    assert {a.shape for a in fused.values()} == {(1, 2 * dim)}
    np.testing.assert_allclose(fused[ids[0]], np.hstack([image[ids[0]], text[ids[0]]]))


RECSYS = """\
    dataset_path: ./local/data/demo_recsys
    gpu list: 0

    visual:
        items:
            input_path: images
            output_path: visual_embeddings
            model: [
                   { model_name: ./demos/demo_recsys/MMFashion.pt,  output_layers: avgpool, reshape: [224, 224], preprocessing: zscore, backend: torch}
            ]
    """


def recsys_repo(repo: Path, photos: Path) -> list[str]:
    ids = add_images(repo / "local/data/demo_recsys", photos, 3)
    write_config(repo, "demo_recsys", RECSYS)
    torch.save(tiny_fashion_net(), repo / "demos/demo_recsys/MMFashion.pt")
    return ids


def test_duchos_custom_model_demo_runs_with_trust_pickle(repo, jpeg_photos):
    """Ducho's demo_recsys custom row (its MMFashion.pt, a pickled module): refused until the
    pickle is trusted, naming the flag and the key; with `--trust-pickle` it runs as written."""
    ids = recsys_repo(repo, jpeg_photos)
    args = ["extract", "--config", "./demos/demo_recsys/config.yml", "--no-progress"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1
    assert "visual.items.model[0].model_name" in refused.output
    assert "--trust-pickle" in refused.output and "trust_pickle: true" in refused.output
    assert not (repo / "local/data/demo_recsys/ducho-fast").exists()
    result = CliRunner().invoke(main, [*args, "--trust-pickle", "--workers", "0"])
    assert result.exit_code == 0, result.output
    folder = repo / "local/data/demo_recsys/visual_embeddings/torch/MMFashion/avgpool"
    arrays = npy(folder)
    assert sorted(arrays) == sorted(ids) and {a.shape for a in arrays.values()} == {(1, 8)}


# --- paths ----------------------------------------------------------------------------------


def visual_yaml(dataset: str, model: str = "ResNet18", **entry) -> dict:
    return {
        "dataset_path": dataset,
        "visual": {
            "items": {
                "input_path": "images",
                "output_path": "out",
                "model": [{"model_name": model, "backend": "torch", **entry}],
            }
        },
    }


def save_yaml(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_dataset_path_is_read_from_the_current_folder(repo):
    (repo / "local/data/demo/images").mkdir(parents=True)
    config = save_yaml(repo / "demos/demo/config.yml", visual_yaml("./local/data/demo"))
    (task,) = build_plan(load_config(config), config.parent).passes
    assert task.failures_path == repo / "local/data/demo/out/failures.tsv"


def test_dataset_path_beside_the_config_still_works_with_a_notice(repo, caplog):
    """ducho-fast's earlier rule (from the config's folder), kept where it is the only match."""
    config = save_yaml(repo / "project/config.yml", visual_yaml("data"))
    (repo / "project/data/images").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="ducho_fast"):
        (task,) = build_plan(load_config(config), config.parent).passes
    assert task.failures_path == repo / "project/data/out/failures.tsv"
    assert any("using " + str(repo / "project/data") in m for m in notices(caplog))


def test_dataset_path_in_both_places_or_neither_names_both(repo):
    config = save_yaml(repo / "project/config.yml", visual_yaml("data"))
    with pytest.raises(ConfigError, match="does not exist") as missing:
        build_plan(load_config(config), config.parent)
    assert str(repo / "data") in str(missing.value)
    assert str(repo / "project/data") in str(missing.value)
    (repo / "data/images").mkdir(parents=True)
    (repo / "project/data/images").mkdir(parents=True)
    with pytest.raises(ConfigError, match="ambiguous") as both:
        build_plan(load_config(config), config.parent)
    assert str(repo / "data") in str(both.value) and str(repo / "project/data") in str(both.value)


@pytest.mark.parametrize(
    ("name", "folder"),
    [
        ("sentence-transformers/all-mpnet-base-v2", "sentence-transformers/all-mpnet-base-v2"),
        ("./models/my-bert", "models/my-bert"),  # a relative local folder nests, as in Ducho
        ("../models/my-bert", "my-bert"),  # Ducho would write outside the output folder
        ("/models/my-bert", "my-bert"),
    ],
)
def test_text_model_folders_nest_as_ducho_nests_them(name, folder):
    from ducho_fast.ducho_plan import model_folder

    assert model_folder(name, "textual") == folder


def test_a_relative_model_path_is_read_from_the_current_folder(repo):
    """Beside the config it is not found (Ducho reads it from where you run), and the error
    names the current folder."""
    (repo / "data/images").mkdir(parents=True)
    torch.save(tiny_fashion_net(), repo / "data/net.pt")
    config = save_yaml(
        repo / "data/config.yml", visual_yaml(str(repo / "data"), "./net.pt", trust_pickle=True)
    )
    with pytest.raises(ConfigError, match=r"model\[0\]\.model_name './net.pt'.*current folder"):
        checked_plan(load_config(config), config.parent)
    fixed = save_yaml(
        repo / "data/config.yml",
        visual_yaml(str(repo / "data"), "./data/net.pt", trust_pickle=True),
    )
    checked_plan(load_config(fixed), fixed.parent)


# --- keys and columns -----------------------------------------------------------------------


def test_keys_ducho_ignores_are_ignored_with_a_notice(tmp_path, caplog):
    """Ducho's own config/config.yml carries `model map`; a typo of a known key is named."""
    (tmp_path / "images").mkdir()
    data = visual_yaml(str(tmp_path), resize=[224, 224], output_layer="avgpool")
    data["model map"] = "modelMap.yml"
    data["visual"]["items"]["output_folder"] = "x"
    config = save_yaml(tmp_path / "c.yml", data)
    with caplog.at_level(logging.WARNING, logger="ducho_fast"):
        parsed = load_config(config)
    said = notices(caplog)
    assert parsed.visual.items.model[0].reshape is None
    assert any("'model map' ignored (Ducho's legacy model map" in m for m in said)
    assert any("'visual.items.model[0].resize' ignored" in m and "'reshape'?" in m for m in said)
    assert any("model[0].output_layer' ignored" in m and "'output_layers'?" in m for m in said)
    assert any(
        "'visual.items.output_folder' ignored" in m and "'output_path'? (Ducho 1's name" in m
        for m in said
    )
    assert len(said) == 4


def test_a_missing_column_lists_the_files_columns(tmp_path):
    (tmp_path / "items.tsv").write_text("asin\ttitle\tdescription\nA1\tx\ty\n")
    data = {
        "dataset_path": str(tmp_path),
        "textual": {
            "items": {
                "input_path": "items.tsv",
                "output_path": "out",
                "item_column": "id",
                "model": [{"model_name": "m", "backend": "sentence_transformers"}],
            }
        },
    }
    with pytest.raises(ConfigError) as info:
        build_plan(load_config(save_yaml(tmp_path / "c.yml", data)), tmp_path)
    message = str(info.value)
    assert "textual.items" in message and "items.tsv has no column(s) ['id']" in message
    assert "columns: ['asin', 'title', 'description']" in message


# --- the plan check -------------------------------------------------------------------------


def two_blocks(dataset: Path, last_model: dict) -> dict:
    """A good visual block first, the block under test last (image interactions for a torch
    model, texts otherwise)."""
    data = visual_yaml(str(dataset), output_layers="avgpool")
    if last_model["backend"] == "torch":
        data["visual"]["interactions"] = {
            "input_path": "images",
            "output_path": "interactions_out",
            "model": [last_model],
        }
        return data
    data["textual"] = {
        "items": {
            "input_path": "items.tsv",
            "output_path": "text_out",
            "item_column": "id",
            "text_column": "text",
            "model": [last_model],
        }
    }
    return data


@pytest.mark.parametrize(
    ("last_model", "message"),
    [
        (
            {"model_name": "./models/missing-minilm", "backend": "sentence_transformers"},
            "textual.items.model[0].model_name './models/missing-minilm': "
            "./models/missing-minilm does not exist",
        ),
        (
            {"model_name": "ResNet18", "backend": "torch", "output_layers": "layer4.1.conv3"},
            "visual.interactions.model[0].output_layers: unknown layer 'layer4.1.conv3' for "
            "ResNet; "
            "did you mean ['layer4.1.conv2', 'layer4.1.conv1', 'layer4.0.conv2']?",
        ),
        (
            {"model_name": "ResNet-18", "backend": "torch"},
            "'ResNet-18' is not a torchvision architecture, a local file or folder, or a hub id "
            "(owner/name); did you mean 'resnet18'?",
        ),
    ],
    ids=["missing-model", "bad-layer", "unknown-name"],
)
def test_a_bad_last_block_fails_before_the_first_block_works(
    last_model, message, repo, jpeg_photos
):
    add_images(repo / "data", jpeg_photos)
    (repo / "data/items.tsv").write_text("id\ttext\na\tred dress\n")
    config = save_yaml(repo / "config.yml", two_blocks(repo / "data", last_model))
    result = CliRunner().invoke(main, ["extract", "--config", str(config), "--no-progress"])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert not (repo / "data/out").exists() and not (repo / "data/ducho-fast").exists()


def test_an_uncached_hub_model_offline_is_refused_first(repo, jpeg_photos, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    add_images(repo / "data", jpeg_photos)
    (repo / "data/items.tsv").write_text("id\ttext\na\tred dress\n")
    model = {"model_name": "nobody/no-such-model", "backend": "transformers"}
    config = save_yaml(repo / "config.yml", two_blocks(repo / "data", model))
    with pytest.raises(ConfigError, match=r"model\[0\]\.model_name .*HF_HUB_OFFLINE is set"):
        checked_plan(load_config(config), repo)


def test_an_output_folder_that_cannot_be_made_is_refused_first(repo, jpeg_photos):
    add_images(repo / "data", jpeg_photos)
    (repo / "data/items.tsv").write_text("id\ttext\na\tred dress\n")
    (repo / "data/text_out").write_text("a file where the output folder should go")
    model = {"model_name": "./minilm", "backend": "sentence_transformers"}
    config = save_yaml(repo / "config.yml", two_blocks(repo / "data", model))
    with pytest.raises(ConfigError, match=r"textual\.items\.output_path: cannot create"):
        checked_plan(load_config(config), repo)
    assert not (repo / "data/ducho-fast").exists()


# --- preprocessing is applied or refused, never dropped -------------------------------------


@pytest.fixture
def fashion_artifact(tmp_path) -> Path:
    """MMFashion.pt exported first (the route the issue found dropping the YAML's keys)."""
    import ducho_fast
    from ducho_fast import ExportConfig, ModelRef

    torch.save(tiny_fashion_net(), tmp_path / "MMFashion.pt")
    ref = ModelRef(str(tmp_path / "MMFashion.pt"), trust_pickle=True, layers=("avgpool",))
    return ducho_fast.export(ExportConfig(ref, tmp_path / "mmfashion-artifact"))


@pytest.mark.parametrize(
    ("keys", "refused"),
    [
        ({"reshape": [224, 224], "preprocessing": "zscore"}, None),  # what it was exported with
        ({"reshape": [64, 64], "preprocessing": "zscore"}, "['resize']"),
        ({"reshape": [224, 224], "preprocessing": "minmax"}, "['mean', 'std', 'normalization']"),
        ({"reshape": [224, 224]}, "['mean', 'std']"),  # Ducho: no preprocessing, no mean/std
    ],
)
def test_an_artifacts_preprocessing_must_agree_with_the_yaml(
    keys, refused, fashion_artifact, tmp_path, jpeg_photos
):
    add_images(tmp_path / "data", jpeg_photos, 2)
    data = visual_yaml(str(tmp_path / "data"), str(fashion_artifact), **keys)
    config = save_yaml(tmp_path / "c.yml", data)
    if refused is None:
        checked_plan(load_config(config), tmp_path)
        return
    with pytest.raises(ConfigError) as info:
        checked_plan(load_config(config), tmp_path)
    assert f"differs from the config's {sorted(keys, key=list(keys).index)}" in str(info.value)
    assert f"in {refused}" in str(info.value) and "trust_pickle: true" in str(info.value)


def test_yaml_preprocessing_reaches_a_pickled_model(tmp_path, jpeg_photos):
    """`trust_pickle: true` in the YAML; zscore and minmax give different features."""
    add_images(tmp_path / "data", jpeg_photos, 2)
    torch.save(tiny_fashion_net(), tmp_path / "net.pt")
    features = {}
    for how in ("zscore", "minmax"):
        data = visual_yaml(str(tmp_path / "data"), str(tmp_path / "net.pt"), preprocessing=how)
        data |= {"trust_pickle": True, "output_format": "compact", "overwrite": True}
        extract_config(save_yaml(tmp_path / "c.yml", data), options=QUIET)
        compact = tmp_path / "data/ducho-fast/visual/items/torch/net/avgpool/features.npy"
        features[how] = np.load(compact)
    assert features["zscore"].shape == (2, 8)
    assert not np.allclose(features["zscore"], features["minmax"], atol=1e-3)


# --- gpu list -------------------------------------------------------------------------------


def test_gpu_list_uses_the_cuda_provider_where_there_is_one(tmp_path, monkeypatch, caplog):
    import ducho_fast.ducho_plan as ducho_plan

    (tmp_path / "images").mkdir()
    data = visual_yaml(str(tmp_path)) | {"gpu list": "1"}
    config = save_yaml(tmp_path / "c.yml", data)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(
        ducho_plan, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with caplog.at_level(logging.WARNING, logger="ducho_fast"):
        (task,) = build_plan(load_config(config), tmp_path).passes
    assert task.models[0].choice.ort_provider == "cuda"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1" and not notices(caplog)
    cpu = save_yaml(tmp_path / "c.yml", data | {"ort_provider": "cpu"})  # explicit key wins
    (task,) = build_plan(load_config(cpu), tmp_path).passes
    assert task.models[0].choice.ort_provider == "cpu"
    eager = save_yaml(tmp_path / "c.yml", data | {"runtime": "torch"})
    with caplog.at_level(logging.WARNING, logger="ducho_fast"):
        build_plan(load_config(eager), tmp_path)
    assert notices(caplog) == [
        "gpu list 1: runtime torch runs on the CPU in ducho-fast; runtime onnxruntime "
        "(CUDA provider) or tensorrt runs on the GPU"
    ]


def test_gpu_list_without_a_gpu_says_the_run_uses_the_cpu(tmp_path, caplog):
    (tmp_path / "images").mkdir()
    config = save_yaml(tmp_path / "c.yml", visual_yaml(str(tmp_path)) | {"gpu list": 0})
    with caplog.at_level(logging.WARNING, logger="ducho_fast"):
        (task,) = build_plan(load_config(config), tmp_path).passes
    (said,) = notices(caplog)
    assert said.startswith("gpu list 0: no GPU provider in ONNX Runtime here")
    assert "the run uses the CPU, as Ducho falls back" in said
    assert task.models[0].choice.ort_provider == "cpu"
    caplog.clear()
    minus_one = save_yaml(tmp_path / "c.yml", visual_yaml(str(tmp_path)) | {"gpu list": -1})
    with caplog.at_level(logging.WARNING, logger="ducho_fast"):
        build_plan(load_config(minus_one), tmp_path)
    assert not notices(caplog), "gpu list -1 asks for the CPU: nothing to say"


# --- Ducho's Python entry point -------------------------------------------------------------


DUCHO_RUN_PY = """\
from ducho.runner.Runner import MultimodalFeatureExtractor
import sys


def main(config, additional_argv):
    extractor_obj = MultimodalFeatureExtractor(config_file_path=config.split("=")[1], argv=additional_argv)
    extractor_obj.execute_extractions()


if __name__ == '__main__':
    main(config=sys.argv[1], additional_argv=sys.argv[1:])
"""


def test_duchos_run_py_runs_with_one_import_changed(repo, tiny_st):
    """Ducho's own run.py (its repository root), the import line changed, run as Ducho's README
    runs it: `python run.py --config=... --key=value` overrides the config like Ducho's argv."""
    link_model(repo, "sentence-transformers/all-mpnet-base-v2", tiny_st)
    add_texts(repo / "local/data/demo4", ["p0", "p1"])
    write_config(
        repo,
        "demo4",
        """\
        dataset_path: ./local/data/demo4
        textual:
            items:
                input_path: descriptions.tsv
                item_column: PRODUCT_ID
                text_column: description
                output_path: textual_embeddings
                model: [
                      { model_name: sentence-transformers/all-mpnet-base-v2,  output_layers: 1, backend: sentence_transformers},
                  ]
        """,
    )
    changed = DUCHO_RUN_PY.replace(
        "from ducho.runner.Runner import", "from ducho_fast.compat import"
    )
    assert changed.count("\n") == DUCHO_RUN_PY.count("\n") and changed != DUCHO_RUN_PY
    (repo / "run.py").write_text(changed)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["--config=./demos/demo4/config.yml", "--textual.items.output_path=other_embeddings"]
    done = subprocess.run(
        [sys.executable, "run.py", *argv], cwd=repo, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    folder = (
        repo / "local/data/demo4/other_embeddings/sentence_transformers"
        / "sentence-transformers/all-mpnet-base-v2/1"
    )  # fmt: skip
    assert sorted(npy(folder)) == ["p0", "p1"]
    assert not (repo / "local/data/demo4/textual_embeddings").exists()


def test_compat_takes_a_config_folder_as_ducho_does(repo):
    from ducho_fast.compat import MultimodalFeatureExtractor

    write_config(repo, "demo1", "dataset_path: .\n")
    extractor = MultimodalFeatureExtractor(config_file_path="./demos/demo1", argv=["--x.y=1"])
    assert extractor.config_path == Path("demos/demo1/config.yml")
    assert extractor.overrides == ("--x.y=1",)
