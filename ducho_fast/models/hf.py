"""Hugging Face families: sentence-transformers, CLIP-style dual encoders, vision backbones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ducho_fast.core.errors import ModelLoadError
from ducho_fast.core.image import ImagePreprocessSpec
from ducho_fast.modalities.text import TextPreprocessSpec
from ducho_fast.models.registry import fingerprint_path, register_family
from ducho_fast.models.spec import LoadedModel, ModelRef, Tower
from ducho_fast.models.towers import ImageTower, TextTower

# model_type -> padding rule of its text tower. SigLIP pools the last token and was trained on
# max-length padding, so its text must be padded to max length; CLIP pools at EOS and masks.
DUAL_ENCODERS = {"clip": "longest", "siglip": "max_length", "siglip2": "max_length"}
PIL_INTERPOLATION = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
SUPPORTED_PROCESSORS = (
    "CLIPImageProcessor",
    "SiglipImageProcessor",
    "ViTImageProcessor",
    "ConvNextImageProcessor",
    "BitImageProcessor",
    "DeiTImageProcessor",
)


def read_config(path: Path | None) -> dict[str, Any]:
    if path is None or not (path / "config.json").is_file():
        return {}
    return json.loads((path / "config.json").read_text())


def image_spec_from_processor(processor: Any) -> ImagePreprocessSpec:
    """Translate a Hugging Face image processor into our frozen spec, or refuse clearly."""
    kind = type(processor).__name__.removesuffix("Fast")
    if kind not in SUPPORTED_PROCESSORS:
        raise ModelLoadError(
            f"image processor {kind} is not supported yet; supported: {list(SUPPORTED_PROCESSORS)}"
        )
    size = dict(processor.size)
    crop = None
    if getattr(processor, "do_center_crop", False) and getattr(processor, "crop_size", None):
        crop = (int(processor.crop_size["height"]), int(processor.crop_size["width"]))
    if "shortest_edge" in size:
        mode, resize = "shortest_edge", int(size["shortest_edge"])
        crop_pct = getattr(processor, "crop_pct", None)
        if kind == "ConvNextImageProcessor" and crop_pct is not None:
            if resize < 384:
                resize, crop = int(resize / crop_pct), (resize, resize)
            else:
                mode, resize, crop = "exact", (resize, resize), None
    else:
        mode, resize = "exact", (int(size["height"]), int(size["width"]))
    normalize = getattr(processor, "do_normalize", True)
    return ImagePreprocessSpec(
        resize_mode=mode,  # type: ignore[arg-type]
        resize=resize,
        interpolation=PIL_INTERPOLATION[int(processor.resample)],  # type: ignore[arg-type]
        crop=crop,
        mean=tuple(processor.image_mean) if normalize else (0.0, 0.0, 0.0),  # type: ignore[arg-type]
        std=tuple(processor.image_std) if normalize else (1.0, 1.0, 1.0),  # type: ignore[arg-type]
        rescale_factor=float(processor.rescale_factor) if processor.do_rescale else 1.0,
    )


def load_image_processor(path: Path) -> Any:
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(path, use_fast=False)


# --- sentence-transformers ------------------------------------------------------------------


def _is_sentence_transformer(ref: ModelRef, path: Path | None) -> bool:
    return path is not None and path.is_dir() and (path / "modules.json").is_file()


def _sentence_embedding(body: nn.Module, input_ids, attention_mask) -> tuple[torch.Tensor]:
    features = body({"input_ids": input_ids, "attention_mask": attention_mask})
    return (features["sentence_embedding"],)


@register_family(
    "sentence_transformers", _is_sentence_transformer, "text encoder with pooling/normalize"
)
def load_sentence_transformer(ref: ModelRef, path: Path | None) -> LoadedModel:
    from sentence_transformers import SentenceTransformer

    assert path is not None
    model = SentenceTransformer(str(path), device="cpu")
    tower = Tower(
        name="text",
        module=TextTower(model, _sentence_embedding),
        output_names=("sentence_embedding",),
        preprocess=TextPreprocessSpec(max_length=int(model.max_seq_length), padding="longest"),
        processor=model.tokenizer,
    )
    return LoadedModel(ref.source, "sentence_transformers", (tower,), fingerprint_path(path), path)


# --- CLIP-style dual encoders -----------------------------------------------------------------


def _is_dual_encoder(ref: ModelRef, path: Path | None) -> bool:
    return read_config(path).get("model_type") in DUAL_ENCODERS


def _image_embeds(body: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor]:
    return (body.get_image_features(pixel_values=pixel_values),)


def _text_embeds(body: nn.Module, input_ids, attention_mask) -> tuple[torch.Tensor]:
    return (body.get_text_features(input_ids=input_ids, attention_mask=attention_mask),)


def _text_embeds_unmasked(body: nn.Module, input_ids, attention_mask) -> tuple[torch.Tensor]:
    return (body.get_text_features(input_ids=input_ids),)


class UnitLength:
    """The embeddings divided by their L2 norm, exactly as `CLIPModel.forward` (and SigLIP's)
    computes its `image_embeds` / `text_embeds`."""

    def __init__(self, compute):
        self.compute = compute

    def __call__(self, body: nn.Module, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(t / t.norm(p=2, dim=-1, keepdim=True) for t in self.compute(body, *inputs))


@register_family("dual_encoder", _is_dual_encoder, "CLIP/SigLIP image and text towers")
def load_dual_encoder(ref: ModelRef, path: Path | None) -> LoadedModel:
    from transformers import AutoModel, AutoTokenizer

    assert path is not None
    model_type = read_config(path)["model_type"]
    model = AutoModel.from_pretrained(path, attn_implementation="eager")
    towers = []
    unit = UnitLength if ref.l2_normalize else (lambda compute: compute)
    if ref.task in ("auto", "image", "image-text"):
        spec = image_spec_from_processor(load_image_processor(path))
        module = ImageTower(spec, model, unit(_image_embeds))
        towers.append(Tower("image", module, ("image_embeds",), preprocess=spec))
    if ref.task in ("auto", "text", "image-text"):
        tokenizer = AutoTokenizer.from_pretrained(path)
        padding = DUAL_ENCODERS[model_type]
        max_length = int(model.config.text_config.max_position_embeddings)
        compute = _text_embeds if padding == "longest" else _text_embeds_unmasked
        towers.append(
            Tower(
                "text",
                TextTower(model, unit(compute)),
                ("text_embeds",),
                preprocess=TextPreprocessSpec(max_length=max_length, padding=padding),  # type: ignore[arg-type]
                processor=tokenizer,
            )
        )
    return LoadedModel(ref.source, model_type, tuple(towers), fingerprint_path(path), path)


# --- transformers vision backbones ---------------------------------------------------------------


def _is_hf_vision(ref: ModelRef, path: Path | None) -> bool:
    if not read_config(path) or not (path / "preprocessor_config.json").is_file():  # type: ignore[operator]
        return False
    # An audio feature extractor (it has a sampling rate) belongs to models.hf_audio.
    return "sampling_rate" not in json.loads((path / "preprocessor_config.json").read_text())  # type: ignore[operator]


class HiddenLayers:
    """Picks named outputs (`pooler_output`, `last_hidden_state`, `hidden_states.N`)."""

    def __init__(self, layers: tuple[str, ...]):
        self.layers = layers
        self.hidden = any(layer.startswith("hidden_states.") for layer in layers)

    def __call__(self, body: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = body(pixel_values=pixel_values, output_hidden_states=self.hidden)
        picked = []
        for layer in self.layers:
            if layer.startswith("hidden_states."):
                picked.append(out.hidden_states[int(layer.split(".", 1)[1])])
            else:
                picked.append(getattr(out, layer))
        return tuple(picked)


@register_family("hf_vision", _is_hf_vision, "transformers vision backbone (ResNet, ViT, ...)")
def load_hf_vision(ref: ModelRef, path: Path | None) -> LoadedModel:
    from transformers import AutoModel

    assert path is not None
    if ref.task == "text":
        raise ModelLoadError(f"{ref.source} is a vision backbone; it has no text tower")
    model = AutoModel.from_pretrained(path, attn_implementation="eager")
    layers = ref.layers or (("pooler_output",) if _has_pooler(model) else ("last_hidden_state",))
    known = ("pooler_output", "last_hidden_state")
    for layer in layers:
        if layer not in known and not layer.startswith("hidden_states."):
            raise ModelLoadError(
                f"unknown layer {layer!r} for {ref.source}; use one of {list(known)} or "
                "hidden_states.N"
            )
    spec = image_spec_from_processor(load_image_processor(path))
    tower = Tower("image", ImageTower(spec, model, HiddenLayers(layers)), layers, preprocess=spec)
    family = read_config(path).get("model_type", "hf_vision")
    return LoadedModel(ref.source, f"hf_vision:{family}", (tower,), fingerprint_path(path), path)


def _has_pooler(model: nn.Module) -> bool:
    return getattr(model, "pooler", None) is not None or "ResNet" in type(model).__name__


# --- plain transformers text models (Ducho's `transformers` textual backend) ----------------------

TEXT_OUTPUTS = ("pooler_output",)


class OutputAttributes:
    """Picks attributes of the model output, as Ducho's `getattr(output, layer)` does."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names

    def __call__(self, body: nn.Module, input_ids, attention_mask) -> tuple[torch.Tensor, ...]:
        out = body(input_ids=input_ids, attention_mask=attention_mask)
        return tuple(getattr(out, name) for name in self.names)


def text_max_length(tokenizer: Any, model: nn.Module) -> int:
    """The tokenizer's own limit (what `truncation=True` uses), capped by the position table."""
    limit = int(getattr(tokenizer, "model_max_length", 0) or 0)
    positions = int(getattr(model.config, "max_position_embeddings", 512))
    return min(limit, positions) if limit > 0 else positions


def _is_hf_text(ref: ModelRef, path: Path | None) -> bool:
    return bool(read_config(path)) and (path / "tokenizer_config.json").is_file()  # type: ignore[operator]


@register_family("hf_text", _is_hf_text, "transformers text model (pooler_output)")
def load_hf_text(ref: ModelRef, path: Path | None) -> LoadedModel:
    """Ducho's transformers text backend: AutoModel and its tokenizer, a named output saved.

    `last_hidden_state` is refused: Ducho saves it padded to each batch's longest text, so
    its shape depends on how items were batched; use `pooler_output` or sentence-transformers.
    """
    from transformers import AutoModel, AutoTokenizer

    if path is None:
        raise ModelLoadError(f"{ref.source} is neither a local folder nor a hub id")
    layers = ref.layers or TEXT_OUTPUTS
    unknown = [layer for layer in layers if layer not in TEXT_OUTPUTS]
    if unknown:
        raise ModelLoadError(
            f"output layer(s) {unknown} of {ref.source} are not supported for text: use "
            f"{list(TEXT_OUTPUTS)} (last_hidden_state is padded per batch in Ducho, so its "
            "shape is not a property of the item) or the sentence_transformers backend"
        )
    model = AutoModel.from_pretrained(path, attn_implementation="eager")
    if getattr(model, "pooler", None) is None:
        raise ModelLoadError(f"{ref.source} has no pooler, so it has no pooler_output")
    tokenizer = AutoTokenizer.from_pretrained(path)
    tower = Tower(
        "text",
        TextTower(model, OutputAttributes(layers)),
        layers,
        preprocess=TextPreprocessSpec(
            max_length=text_max_length(tokenizer, model), padding="longest"
        ),
        processor=tokenizer,
    )
    return LoadedModel(ref.source, "hf_text", (tower,), fingerprint_path(path), path)
