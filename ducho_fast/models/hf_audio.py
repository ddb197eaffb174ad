"""transformers audio encoders on raw waveforms: Wav2Vec2, HuBERT, WavLM, Data2VecAudio.

Each is loaded with its own feature extractor, which says the sampling rate, whether clips are
normalised and whether the model takes an attention mask. The tower returns each asked layer
mean-pooled over the valid frames of each input window (see `modalities.audio`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ducho_fast.core.errors import ModelLoadError
from ducho_fast.modalities.audio import AudioPreprocessSpec
from ducho_fast.models.registry import fingerprint_path, register_family
from ducho_fast.models.spec import LoadedModel, ModelRef, Tower, UnknownLayerError

WAVEFORM_ENCODERS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
# Recognised, so they get a clear answer rather than a wrong family's error.
NOT_YET = {
    "whisper": "Whisper's encoder",
    "audio-spectrogram-transformer": "AST",
    "clap": "CLAP's audio tower",
}
NAMED_OUTPUTS = ("last_hidden_state",)


def read_json(path: Path, name: str) -> dict:
    file = path / name
    return json.loads(file.read_text()) if file.is_file() else {}


def _is_audio_encoder(ref: ModelRef, path: Path | None) -> bool:
    if path is None or not path.is_dir():
        return False
    return read_json(path, "config.json").get("model_type") in (*WAVEFORM_ENCODERS, *NOT_YET)


def layer_names(layers: tuple[str, ...], depth: int, source: str) -> tuple[str, ...]:
    """Ducho's `output_layers`: an integer indexes `hidden_states` (0: the feature
    projection, `depth`: the last layer; negative counts from the end), or a named output."""
    names = []
    for layer in layers or ("last_hidden_state",):
        text = str(layer).removeprefix("hidden_states.")
        if text.lstrip("-").isdigit():
            index = int(text)
            if not -(depth + 1) <= index <= depth:
                raise UnknownLayerError(
                    f"{source} has hidden_states 0..{depth}; output layer {layer} is outside it"
                )
            names.append(f"hidden_states.{index % (depth + 1)}")
        elif text in NAMED_OUTPUTS:
            names.append(text)
        else:
            hint = " (these models have no pooler)" if text == "pooler_output" else ""
            raise UnknownLayerError(
                f"unknown output layer {layer!r} for {source}{hint}; use an integer index "
                f"into hidden_states (0..{depth}) or one of {list(NAMED_OUTPUTS)}"
            )
    return tuple(names)


class AudioTower(nn.Module):
    """(input_values, attention_mask) -> each layer mean-pooled over the valid frames."""

    def __init__(self, body: nn.Module, layers: tuple[str, ...], masked: bool):
        super().__init__()
        self.body = body
        self.layers = layers
        self.masked = masked
        self.hidden = any(layer.startswith("hidden_states.") for layer in layers)

    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        # A model without a mask gets none (as its feature extractor gives none): its
        # batches hold clips of equal length only (modalities.audio.call_groups).
        mask = {"attention_mask": attention_mask} if self.masked else {}
        out = self.body(input_values=input_values, output_hidden_states=self.hidden, **mask)
        picked = [
            out.hidden_states[int(layer.split(".", 1)[1])]
            if layer.startswith("hidden_states.")
            else getattr(out, layer)
            for layer in self.layers
        ]
        lengths = self.body._get_feat_extract_output_lengths(attention_mask.sum(-1))
        frames = torch.arange(picked[0].shape[1], device=input_values.device)
        valid = (frames[None, :] < lengths[:, None]).to(picked[0].dtype)[..., None]
        count = valid.sum(1).clamp(min=1.0)
        return tuple((x * valid).sum(1) / count for x in picked)


# Masked, yet changed by padding: Data2VecAudio's positional embedding stacks convolutions, so
# the padded frames (zeroed before the first) leak into valid frames at the second. Such models
# run equal-length batches, as the ones without a mask do (found by the clip-by-clip test).
PADDING_CHANGES = ("data2vec-audio",)


def audio_spec(extractor, config) -> AudioPreprocessSpec:
    """`masked`: padded batches with an attention mask give each clip its own features."""
    takes_mask = bool(getattr(extractor, "return_attention_mask", False))
    return AudioPreprocessSpec(
        sampling_rate=int(extractor.sampling_rate),
        normalize=bool(getattr(extractor, "do_normalize", False)),
        masked=takes_mask and config.model_type not in PADDING_CHANGES,
        conv_kernels=tuple(config.conv_kernel),
        conv_strides=tuple(config.conv_stride),
    )


@register_family("hf_audio", _is_audio_encoder, "transformers audio encoder (Wav2Vec2, ...)")
def load_hf_audio(ref: ModelRef, path: Path | None) -> LoadedModel:
    from transformers import AutoFeatureExtractor, AutoModel

    assert path is not None
    model_type = read_json(path, "config.json")["model_type"]
    if model_type in NOT_YET:
        raise ModelLoadError(
            f"{ref.source}: {NOT_YET[model_type]} is not supported yet by ducho-fast; use a "
            f"waveform encoder ({', '.join(WAVEFORM_ENCODERS)})"
        )
    if ref.task not in ("auto", "audio"):
        raise ModelLoadError(f"{ref.source} is an audio encoder; it has no {ref.task} tower")
    model = AutoModel.from_pretrained(path, attn_implementation="eager")
    if getattr(model.config, "add_adapter", False):
        raise ModelLoadError(f"{ref.source}: encoders with an adapter are not supported")
    extractor = AutoFeatureExtractor.from_pretrained(path)
    layers = layer_names(ref.layers, int(model.config.num_hidden_layers), ref.source)
    spec = audio_spec(extractor, model.config)
    tower = Tower(
        "audio",
        AudioTower(model, layers, spec.masked),
        layers,
        preprocess=spec,
        processor=extractor,
    )
    return LoadedModel(ref.source, f"hf_audio:{model_type}", (tower,), fingerprint_path(path), path)
