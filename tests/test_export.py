"""Exported graphs compute what the eager models compute, for every family and precision."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import ducho_fast
from ducho_fast import ExportConfig, ModelRef, Sample
from ducho_fast.artifact.manifest import read_manifest
from ducho_fast.core.errors import ArtifactError, ExportValidationError, ModelLoadError
from ducho_fast.core.fidelity import GATES, Gate, row_cosines
from ducho_fast.exporter import api
from ducho_fast.modalities.base import BATCH_SIZES

TEXTS = [
    "Soft jersey top with a round neckline",
    "Slim-fit trousers in woven fabric with a high waist, zip fly and side pockets. " * 6,
    "a",
    "Sneakers with padded edges",
    "Knitted jumper in a wool blend with dropped shoulders and ribbing",
]


def do_export(source, folder: Path, **kwargs) -> Path:
    ref_kwargs = {k: kwargs.pop(k) for k in ("task", "layers", "weights") if k in kwargs}
    return ducho_fast.export(ExportConfig(ModelRef(str(source), **ref_kwargs), folder, **kwargs))


def assert_close(got: np.ndarray, reference: np.ndarray, min_cosine: float = 0.9999) -> None:
    assert got.shape == reference.shape
    assert row_cosines(reference, got).min() >= min_cosine


def validation_cases(manifest, graph: str) -> set[str]:
    cases = manifest.graph(graph).validation["fp32"]["cases"]
    return {case["case"] for case in cases}


def test_tiny_clip_both_towers_match_eager(tiny_clip, tmp_path, skimage_photos):
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    folder = do_export(tiny_clip, tmp_path / "clip")
    encoder = ducho_fast.load(folder)
    manifest = encoder.manifest
    assert {g.name for g in manifest.graphs} == {"image", "text"}
    assert {f"batch={b}" for b in BATCH_SIZES} == validation_cases(manifest, "image")
    text_cases = validation_cases(manifest, "text")
    assert {c.split(",")[1] for c in text_cases} == {"seq=7", "seq=29", "seq=77"}
    assert manifest.graph("image").inputs[0].dtype == "uint8"
    assert manifest.graph("image").inputs[0].shape == ["batch", 64, 64, 3]

    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = CLIPImageProcessor.from_pretrained(tiny_clip)
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip)
    from ducho_fast.core.image import decode_image

    images = [decode_image(p) for p in skimage_photos]
    with torch.no_grad():
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
        expected_images = model.get_image_features(pixel_values=pixel_values).numpy()
        tokens = tokenizer(
            TEXTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        )
        expected_texts = model.get_text_features(**tokens).numpy()
    assert_close(encoder.encode_images(skimage_photos, batch_size=3), expected_images)
    assert_close(encoder.encode_texts(TEXTS, batch_size=2), expected_texts)


def test_each_tower_exports_alone(tiny_clip, tmp_path):
    folder = do_export(tiny_clip, tmp_path / "clip-text", task="text")
    manifest = read_manifest(folder)
    assert [g.name for g in manifest.graphs] == ["text"]
    assert manifest.graph("text").outputs[0].name == "text_embeds"


def test_sentence_transformer_matches_encode(tiny_st, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = do_export(tiny_st, tmp_path / "st")
    expected = SentenceTransformer(str(tiny_st), device="cpu").encode(TEXTS)
    got = ducho_fast.load(folder).encode_texts(TEXTS, batch_size=2)
    assert_close(got, expected)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # Normalize inside


def test_real_minilm_matches_sentence_transformers(minilm_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    folder = do_export(minilm_dir, tmp_path / "minilm")
    manifest = read_manifest(folder)
    assert manifest.graph("text").preprocess["max_length"] == 256
    assert {c.split(",")[1] for c in validation_cases(manifest, "text")} == {
        "seq=7",
        "seq=29",
        "seq=256",
    }
    expected = SentenceTransformer(str(minilm_dir), device="cpu").encode(TEXTS)
    assert_close(ducho_fast.load(folder).encode_texts(TEXTS), expected)


@pytest.mark.parametrize("fixture", ["tiny_resnet", "tiny_vit"])
def test_hf_vision_backbones_match_eager(fixture, request, tmp_path, skimage_photos):
    from transformers import AutoImageProcessor, AutoModel

    from ducho_fast.core.image import decode_image

    source = request.getfixturevalue(fixture)
    encoder = ducho_fast.load(do_export(source, tmp_path / fixture))
    model = AutoModel.from_pretrained(source).eval()
    processor = AutoImageProcessor.from_pretrained(source, use_fast=False)
    images = [decode_image(p) for p in skimage_photos]
    with torch.no_grad():
        out = model(**processor(images=images, return_tensors="pt"))
    expected = out.pooler_output.reshape(len(images), -1).numpy()
    assert_close(encoder.encode_images(skimage_photos), expected)


def test_torchvision_layers_match_ducho_torch_path(tmp_path, skimage_photos):
    """Same as Ducho's torch path: Resize((224, 224), bicubic), ToTensor, Normalize, FX layers."""
    import torchvision
    from torchvision import transforms
    from torchvision.models.feature_extraction import create_feature_extractor

    from ducho_fast.core.image import IMAGENET_MEAN, IMAGENET_STD, decode_image

    torch.manual_seed(1)
    model = torchvision.models.resnet18(weights=None).eval()
    weights = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), weights)
    folder = do_export("resnet18", tmp_path / "r18", weights=str(weights), layers=("avgpool", "fc"))
    encoder = ducho_fast.load(folder)
    assert [o.name for o in encoder.manifest.graph("image").outputs] == ["avgpool", "fc"]

    ducho_transform = transforms.Compose(
        [
            transforms.Resize((224, 224), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    extractor = create_feature_extractor(model, {"avgpool": "avgpool", "fc": "fc"})
    batch = torch.stack([ducho_transform(decode_image(p)) for p in skimage_photos])
    with torch.no_grad():
        expected = {k: v.flatten(1).numpy() for k, v in extractor(batch).items()}
    for layer in ("avgpool", "fc"):
        got = encoder.encode_images(skimage_photos, output=layer)
        assert_close(got, expected[layer])
        np.testing.assert_allclose(got, expected[layer], rtol=0, atol=1e-4)


def test_pickle_needs_explicit_trust(tmp_path):
    import torchvision

    path = tmp_path / "model.pt"
    torch.save(torchvision.models.resnet18(weights=None), path)
    with pytest.raises(ModelLoadError, match="trust-pickle"):
        do_export(path, tmp_path / "pickled")
    config = ExportConfig(ModelRef(str(path), trust_pickle=True), tmp_path / "pickled")
    manifest = read_manifest(ducho_fast.export(config))
    assert (
        manifest.family == "torch_pickle" and manifest.graph("image").outputs[0].name == "avgpool"
    )


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_lower_precisions_meet_their_gates(precision, tiny_clip, tmp_path):
    folder = do_export(tiny_clip, tmp_path / precision, precision=precision)
    manifest = read_manifest(folder)
    gate = GATES[precision].min_cosine
    for graph in manifest.graphs:
        report = graph.validation[precision]
        assert report["passed"] and report["min_cosine"] >= gate
        assert graph.precision == precision
    model = onnx.load(str(folder / "image.onnx"))
    ops = {node.op_type for node in model.graph.node}
    if precision == "int8":
        assert manifest.graph("image").quantization.startswith("dynamic")
        assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul"}
    else:
        dtypes = {init.data_type for init in model.graph.initializer}
        assert onnx.TensorProto.FLOAT16 in dtypes
        assert "LayerNormalization" in ops  # kept in fp32 (op_block_list)


def test_int8_failing_the_gate_is_a_typed_error(tiny_clip, tmp_path, monkeypatch):
    monkeypatch.setitem(GATES, "int8", Gate(min_cosine=0.9999999, max_abs=None))
    with pytest.raises(ExportValidationError) as info:
        do_export(tiny_clip, tmp_path / "int8", precision="int8", task="image")
    message = str(info.value)
    assert "dynamic-per-tensor" in message and "dynamic-per-channel" in message
    assert "min cosine" in message
    assert not (tmp_path / "int8").exists()


def test_static_int8_is_calibrated_on_the_users_sample(tiny_clip, tmp_path, colour_photos):
    # calibrated on 3/4 of the sample, gated on the held-out rest
    sample = Sample(images=tuple(colour_photos))
    config = ExportConfig(
        ModelRef(str(tiny_clip), task="image"),
        tmp_path / "qdq",
        precision="int8",
        int8_mode="static",
        sample=sample,
    )
    manifest = read_manifest(ducho_fast.export(config))
    assert manifest.graph("image").quantization == "static-qdq"
    ops = {n.op_type for n in onnx.load(str(tmp_path / "qdq" / "image.onnx")).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops


def test_corrupted_export_is_rejected_and_leaves_no_artifact(tiny_st, tmp_path, monkeypatch):
    real_export = api.export_tower

    def corrupting_export(tower, path, opset):
        real_export(tower, path, opset)
        model = onnx.load(str(path))
        biggest = max(model.graph.initializer, key=lambda t: len(t.raw_data))
        values = onnx.numpy_helper.to_array(biggest).copy()
        values.flat[::7] *= 1.5
        biggest.CopyFrom(onnx.numpy_helper.from_array(values, biggest.name))
        onnx.save(model, str(path))
        return path

    monkeypatch.setattr(api, "export_tower", corrupting_export)
    with pytest.raises(ExportValidationError) as info:
        do_export(tiny_st, tmp_path / "bad")
    assert "text/sentence_embedding" in str(info.value)
    assert not (tmp_path / "bad").exists()
    assert not list(tmp_path.glob(".bad.staging-*"))


def test_tampered_artifact_is_refused_on_load(tiny_st, tmp_path):
    folder = do_export(tiny_st, tmp_path / "st")
    graph = folder / "text.onnx"
    data = bytearray(graph.read_bytes())
    data[-100] ^= 0xFF
    graph.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match the hash"):
        ducho_fast.load(folder)


def test_unvalidated_manifest_is_refused(tiny_st, tmp_path):
    folder = do_export(tiny_st, tmp_path / "st")
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["valid"] = False
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="did not pass validation"):
        ducho_fast.load(folder)


def test_static_int8_is_gated_on_held_out_images(tmp_path):
    from ducho_fast.exporter.api import split_sample

    images = tuple(tmp_path / f"{i}.jpg" for i in range(9))
    fitted, held = split_sample(Sample(images=images, texts=("a",)), "image")
    assert set(fitted.images).isdisjoint(held.images)
    assert set(fitted.images) | set(held.images) == set(images)
    assert len(held.images) == 2 and fitted.texts == ("a",)
    one = Sample(images=images[:1])
    assert split_sample(one, "image") == (one, one)  # nothing to hold out: gate on what there is
    texts = Sample(texts=("a", "b", "c", "d", "e"))
    assert split_sample(texts, "text") == (texts, texts)  # text validates on its own inputs


def test_minilm_int8_keeps_feed_forward_in_fp32_to_pass_its_gate(minilm_dir, tmp_path):
    """Full dynamic int8 fails MiniLM's gate (per-channel ~0.977); the fallback passes it."""
    config = ExportConfig(ModelRef(str(minilm_dir)), tmp_path / "int8", precision="int8")
    manifest = read_manifest(ducho_fast.export(config))
    graph = manifest.graph("text")
    assert graph.quantization == "dynamic-attention-only"
    assert graph.validation["int8"]["passed"]
    ops = [n for n in onnx.load(str(tmp_path / "int8" / "text.onnx")).graph.node]
    quantized = {n.name for n in ops if n.op_type in ("MatMulInteger", "DynamicQuantizeLinear")}
    float_ffn = [n.name for n in ops if n.op_type == "MatMul" and "intermediate/" in n.name]
    assert quantized and len(float_ffn) == 6  # one feed-forward up-projection per layer
    expected = ducho_fast.load(do_export(minilm_dir, tmp_path / "fp32")).encode_texts(TEXTS)
    got = ducho_fast.load(tmp_path / "int8").encode_texts(TEXTS)
    assert row_cosines(expected, got).min() >= 0.99


def test_unchanged_artifact_is_not_rehashed_but_a_changed_one_is(tiny_st, tmp_path, monkeypatch):
    from ducho_fast.artifact import manifest as manifest_module

    folder = do_export(tiny_st, tmp_path / "st")
    past = 1_700_000_000
    for path in folder.rglob("*"):
        os.utime(path, (past, past))
    hashed: list[Path] = []
    real_sha = manifest_module.sha256_file
    monkeypatch.setattr(
        manifest_module, "sha256_file", lambda path: hashed.append(path) or real_sha(path)
    )
    read_manifest(folder)
    assert hashed, "the first open checks every hash"
    hashed.clear()
    read_manifest(folder)
    assert hashed == [], "an unchanged artifact is not hashed again"

    graph = folder / "text.onnx"
    data = bytearray(graph.read_bytes())
    data[-100] ^= 0xFF
    graph.write_bytes(bytes(data))  # same size, new mtime
    with pytest.raises(ArtifactError, match="does not match the hash"):
        read_manifest(folder)


def test_fresh_files_are_not_stamped_so_a_quick_rewrite_is_caught(tiny_st, tmp_path):
    folder = do_export(tiny_st, tmp_path / "st")
    read_manifest(folder)  # files written seconds ago: mtime could repeat on a rewrite
    assert not (folder / ".verified.json").exists()


def test_int8_of_a_cnn_is_never_fp32_under_an_int8_label(tiny_resnet, tmp_path, colour_photos):
    """Dynamic int8 quantizes MatMul/Gemm only: on a CNN it would be the fp32 graph."""
    from ducho_fast.core.errors import ConfigError
    from ducho_fast.exporter.quantize import MAX_FP32_CONV_SHARE, fp32_conv_share

    fp32 = do_export(tiny_resnet, tmp_path / "fp32")
    assert fp32_conv_share(fp32 / "image.onnx", fp32 / "image.onnx") > MAX_FP32_CONV_SHARE
    with pytest.raises(ConfigError, match="convolutions"):
        do_export(tiny_resnet, tmp_path / "dynamic", precision="int8")
    assert not (tmp_path / "dynamic").exists()
    folder = do_export(
        tiny_resnet,
        tmp_path / "static",
        precision="int8",
        int8_mode="static",
        sample=Sample(images=tuple(colour_photos)),
    )
    graph = read_manifest(folder).graph("image")
    assert graph.quantization == "static-qdq"
    assert fp32_conv_share(folder / "image.onnx", fp32 / "image.onnx") == 0.0
    assert graph.validation["int8"]["ort_speedup_vs_fp32"] > 0  # measured, reported, not assumed


def test_int8_of_a_transformer_keeps_its_dynamic_variants(tiny_st, tmp_path):
    from ducho_fast.exporter.quantize import fp32_conv_share

    folder = do_export(tiny_st, tmp_path / "int8", precision="int8")
    assert read_manifest(folder).graph("text").quantization.startswith("dynamic")
    assert fp32_conv_share(folder / "text.onnx", folder / "text.onnx") == 0.0
