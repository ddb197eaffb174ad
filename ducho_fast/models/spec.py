"""Frozen descriptions of what a loaded model offers: its towers and their preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # torch stays unimported on the ONNX Runtime path (start-up time)
    from torch import nn

from ducho_fast.core.errors import ModelLoadError
from ducho_fast.core.image import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessSpec

Task = Literal["auto", "image", "text", "image-text", "audio"]


@dataclass(frozen=True)
class ModelRef:
    """What the user asked for: a model source plus the choices that shape the export.

    `weights` is for torchvision: `DEFAULT` (download), `none` (random) or a state-dict path.
    The image overrides apply where the model carries no preprocessing (torchvision, pickles).
    `family` skips detection where the user's backend decides (a sentence-transformers folder
    run through Ducho's `transformers` backend is a plain transformers text model).
    """

    source: str | Path
    task: Task = "auto"
    layers: tuple[str, ...] = ()
    weights: str = "DEFAULT"
    trust_pickle: bool = False
    image_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    normalization: str = "zscore"
    family: str = "auto"  # or a registered family name, e.g. `hf_text` for Ducho's transformers
    # Dual encoders: embeddings of unit length, as `CLIPModel.forward` returns them (Ducho's
    # visual_textual values); otherwise the projected features (`get_image_features`).
    l2_normalize: bool = False
    # Audio: each layer's frames mean-pooled per clip, or ("none") the clip's whole frame
    # sequence, Ducho's (1, T, D); waveform encoders only (models/hf_audio.py).
    pooling: Literal["mean", "none"] = "mean"

    def __post_init__(self) -> None:
        """A path may be given as a Path; it is kept as the string the user wrote."""
        object.__setattr__(self, "source", str(self.source))
        object.__setattr__(self, "layers", tuple(self.layers))
        if self.pooling not in ("mean", "none"):
            raise ModelLoadError(f"unknown pooling {self.pooling!r}; use mean or none")


class UnknownLayerError(ModelLoadError):
    """A layer asked for is not in the model (a config's `output_layers`)."""


def ducho_image_spec(ref: ModelRef) -> ImagePreprocessSpec:
    """Ducho's torch path for torchvision models and pickles: PIL's bicubic resize to
    exactly `image_size`, then the ref's normalisation (no torch needed to say so)."""
    return ImagePreprocessSpec(
        resize_mode="exact",
        resize=ref.image_size,
        interpolation="bicubic",
        crop=None,
        mean=ref.mean,
        std=ref.std,
        crop_rounding="round",
        normalization=ref.normalization,  # type: ignore[arg-type]
    )


@dataclass(frozen=True, eq=False)
class Tower:
    """One exportable graph of one modality (`name`: a key of the modality table).

    `preprocess` is the modality's serialisable spec (an `ImagePreprocessSpec`, a
    `TextPreprocessSpec`); `processor` what turns raw items into inputs eagerly (a tokenizer).
    """

    name: str
    module: nn.Module
    output_names: tuple[str, ...]
    preprocess: Any = None
    processor: Any = None
    # Ducho's torch backend squeezes size-1 axes out of a layer's output (`avgpool`'s
    # (2048, 1, 1) is saved (1, 2048)); its transformers backend saves the output as it is.
    squeeze_outputs: bool = False
    # Outputs are (batch, frames, D) sequences, padded frames zeroed (audio `pooling: none`):
    # the export gives them a dynamic frame axis.
    sequence: bool = False


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model resolved to its family, with towers ready for export and eager reference runs."""

    source: str
    family: str
    towers: tuple[Tower, ...]
    fingerprint: str
    local_path: Path | None = None
    details: dict = field(default_factory=dict)

    def tower(self, name: str) -> Tower:
        for tower in self.towers:
            if tower.name == name:
                return tower
        known = [t.name for t in self.towers]
        raise KeyError(f"model {self.source} has no {name} tower (it has: {known})")
