"""transformers audio encoders: on raw waveforms (Wav2Vec2, HuBERT, WavLM, Data2VecAudio) and
on spectrograms (Whisper's encoder, AST, CLAP's audio tower with its projection).

Each is loaded with its own feature extractor. For the waveform encoders it says the sampling
rate, whether clips are normalised and whether the model takes an attention mask; the
spectrogram encoders' extractor itself runs in the decode workers (`modalities.audio.
FeatureSpec`). The tower returns each asked layer mean-pooled over the valid frames of each
input window, or the model's own pooled embedding (AST's `pooler_output`, CLAP's
`audio_embeds`); see `modalities.audio`. With `pooling: none` (waveform encoders only) it
returns each layer's frames, padded frames zeroed, which the engine stitches per clip.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ducho_fast.core.errors import ModelLoadError
from ducho_fast.modalities.audio import AudioPreprocessSpec, FeatureSpec
from ducho_fast.models.registry import fingerprint_path, register_family
from ducho_fast.models.spec import LoadedModel, ModelRef, Tower, UnknownLayerError

WAVEFORM_ENCODERS = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
# model_type -> FeatureSpec kind
SPECTROGRAM_ENCODERS = {
    "whisper": "whisper",
    "audio-spectrogram-transformer": "ast",
    "clap": "clap",
    "clap_audio_model": "clap",  # a saved ClapAudioModelWithProjection
}
# The named outputs each kind has (an integer layer indexes hidden_states where listed).
NAMED_OUTPUTS = {
    "waveform": ("last_hidden_state",),
    "whisper": ("last_hidden_state",),
    "ast": ("last_hidden_state", "pooler_output"),
    "clap": ("audio_embeds",),
}
HAS_HIDDEN_STATES = ("waveform", "whisper", "ast")


def read_json(path: Path, name: str) -> dict:
    file = path / name
    return json.loads(file.read_text()) if file.is_file() else {}


def _is_audio_encoder(ref: ModelRef, path: Path | None) -> bool:
    if path is None or not path.is_dir():
        return False
    model_type = read_json(path, "config.json").get("model_type")
    return model_type in (*WAVEFORM_ENCODERS, *SPECTROGRAM_ENCODERS)


def layer_names(
    layers: tuple[str, ...], depth: int, source: str, kind: str = "waveform"
) -> tuple[str, ...]:
    """Ducho's `output_layers`: an integer indexes `hidden_states` (0: the feature
    projection, `depth`: the last layer; negative counts from the end), or a named output
    the model has."""
    named = NAMED_OUTPUTS[kind]
    names = []
    for layer in layers or (named[-1] if kind == "clap" else named[0],):
        text = str(layer).removeprefix("hidden_states.")
        if text.lstrip("-").isdigit() and kind in HAS_HIDDEN_STATES:
            index = int(text)
            if not -(depth + 1) <= index <= depth:
                raise UnknownLayerError(
                    f"{source} has hidden_states 0..{depth}; output layer {layer} is outside it"
                )
            names.append(f"hidden_states.{index % (depth + 1)}")
        elif text in named:
            names.append(text)
        else:
            hint = " (this model has no pooler)" if text == "pooler_output" else ""
            index = f"an integer index into hidden_states (0..{depth}) or " * (
                kind in HAS_HIDDEN_STATES
            )
            raise UnknownLayerError(
                f"unknown output layer {layer!r} for {source}{hint}; use {index}"
                f"one of {list(named)}"
            )
    return tuple(names)


class AudioTower(nn.Module):
    """(input_values, attention_mask) -> each layer mean-pooled over the valid frames, or
    (`sequence`) each layer's frames `(N, F, D)` with the padded frames zeroed."""

    def __init__(
        self, body: nn.Module, layers: tuple[str, ...], masked: bool, sequence: bool = False
    ):
        super().__init__()
        self.body = body
        self.layers = layers
        self.masked = masked
        self.sequence = sequence
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
        if self.sequence:
            return tuple(x * valid for x in picked)
        count = valid.sum(1).clamp(min=1.0)
        return tuple((x * valid).sum(1) / count for x in picked)


# Masked, yet changed by padding: Data2VecAudio's positional embedding stacks convolutions, so
# the padded frames (zeroed before the first) leak into valid frames at the second. Such models
# run equal-length batches, as the ones without a mask do (found by the clip-by-clip test).
PADDING_CHANGES = ("data2vec-audio",)


def audio_spec(extractor, config, pooling: str = "mean") -> AudioPreprocessSpec:
    """`masked`: padded batches with an attention mask give each clip its own features."""
    takes_mask = bool(getattr(extractor, "return_attention_mask", False))
    return AudioPreprocessSpec(
        sampling_rate=int(extractor.sampling_rate),
        normalize=bool(getattr(extractor, "do_normalize", False)),
        masked=takes_mask and config.model_type not in PADDING_CHANGES,
        conv_kernels=tuple(config.conv_kernel),
        conv_strides=tuple(config.conv_stride),
        pooling=pooling,
    )


SEQUENCE_SUPPORT = (
    "pooling: none (Ducho's (1, T, D) frame sequences) is supported for the wav2vec2 family "
    "(Wav2Vec2, HuBERT, WavLM, Data2VecAudio) with an integer output_layers or "
    "last_hidden_state; use pooling: mean"
)


def check_audio_pooling(ref: ModelRef, path: Path | None) -> None:
    """`pooling: none` asked of a model that has no frame sequence to give (Whisper, AST,
    CLAP, a pooled layer) is refused before any weight loads, in one line."""
    if ref.pooling != "none" or path is None:
        return
    model_type = read_json(path, "config.json").get("model_type")
    if model_type not in WAVEFORM_ENCODERS:
        raise ModelLoadError(f"{ref.source} (model_type {model_type}): {SEQUENCE_SUPPORT}")
    pooled = [layer for layer in ref.layers if layer in ("pooler_output", "audio_embeds")]
    if pooled:
        raise ModelLoadError(f"{ref.source}: {pooled[0]} is a pooled layer; {SEQUENCE_SUPPORT}")


class SpectrogramTower(nn.Module):
    """(flat features of equal-size windows, frame mask) -> each layer per window: frames
    mean-pooled (Whisper: only the frames of real audio, from the extractor's mel mask; AST:
    all tokens of its fixed-size input), or the model's own pooled embedding."""

    def __init__(self, body: nn.Module, layers: tuple[str, ...], spec: FeatureSpec):
        super().__init__()
        self.body = body
        self.layers = layers
        self.kind = spec.kind
        self.shape = spec.feature_shape
        self.hidden = any(layer.startswith("hidden_states.") for layer in layers)

    def run_body(self, features: torch.Tensor):
        if self.kind == "whisper":
            return self.body(input_features=features, output_hidden_states=self.hidden)
        if self.kind == "ast":
            return self.body(input_values=features, output_hidden_states=self.hidden)
        # CLAP: a window is never longer than the model's input, so never "longer"
        longer = torch.zeros(features.shape[0], 1, dtype=torch.bool, device=features.device)
        return self.body(input_features=features, is_longer=longer)

    def forward(
        self, input_values: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        out = self.run_body(input_values.reshape(-1, *self.shape))
        picked = [
            out.hidden_states[int(layer.split(".", 1)[1])]
            if layer.startswith("hidden_states.")
            else getattr(out, layer)
            for layer in self.layers
        ]
        return tuple(self.pool(x, attention_mask) for x in picked)

    def pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # a pooled embedding already
            return x
        if self.kind != "whisper":
            return x.mean(1)
        # Whisper's second convolution has stride 2: encoder frame j starts at mel frame 2j
        valid = mask[:, ::2][:, : x.shape[1]].to(x.dtype)[..., None]
        return (x * valid).sum(1) / valid.sum(1).clamp(min=1.0)


def feature_window_s(kind: str, extractor) -> float:
    """The model's own input length: Whisper's padded 30 s, AST's `max_length` frames
    (25 ms frames every 10 ms), CLAP's `max_length_s`."""
    rate = int(extractor.sampling_rate)
    if kind == "whisper":
        return int(extractor.n_samples) / rate
    if kind == "ast":
        return (round(0.025 * rate) + round(0.010 * rate) * (int(extractor.max_length) - 1)) / rate
    return float(extractor.nb_max_samples) / rate


def feature_spec(kind: str, extractor) -> FeatureSpec:
    config = json.dumps(extractor.to_dict(), sort_keys=True, default=str)
    rate = int(extractor.sampling_rate)
    probe = FeatureSpec(kind, rate, type(extractor).__name__, config, (1,), 1.0)
    features = probe.features(np.zeros(rate, np.float32))
    shape = extractor_shape(kind, extractor, len(features.values))
    return FeatureSpec(
        kind, rate, type(extractor).__name__, config, shape, feature_window_s(kind, extractor)
    )


def extractor_shape(kind: str, extractor, size: int) -> tuple[int, ...]:
    """The model's input shape of one window (the extractor's output, flattened in the graph
    input)."""
    if kind == "whisper":
        return (int(extractor.feature_size), size // int(extractor.feature_size))
    if kind == "ast":
        return (int(extractor.max_length), int(extractor.num_mel_bins))
    bins = int(extractor.feature_size)
    frames = math.ceil(int(extractor.nb_max_samples) / int(extractor.hop_length)) + 1
    return (size // (frames * bins), frames, bins)


def load_spectrogram(ref: ModelRef, path: Path, model_type: str) -> LoadedModel:
    import transformers
    from transformers import AutoFeatureExtractor

    kind = SPECTROGRAM_ENCODERS[model_type]
    classes = {"whisper": "WhisperModel", "ast": "ASTModel", "clap": "ClapAudioModelWithProjection"}
    model = getattr(transformers, classes[kind]).from_pretrained(path, attn_implementation="eager")
    body = model.get_encoder() if kind == "whisper" else model
    extractor = AutoFeatureExtractor.from_pretrained(path)
    if float(getattr(extractor, "dither", 0.0) or 0.0) != 0.0:
        raise ModelLoadError(
            f"{ref.source}: its feature extractor adds random noise (dither="
            f"{extractor.dither}), so features would change from run to run; save it with "
            "dither=0.0 (the released checkpoints' setting)"
        )
    config = model.config
    depth = int(getattr(config, "encoder_layers", getattr(config, "num_hidden_layers", 0)))
    layers = layer_names(ref.layers, depth, ref.source, kind)
    spec = feature_spec(kind, extractor)
    tower = Tower("audio", SpectrogramTower(body.eval(), layers, spec), layers, spec, extractor)
    return LoadedModel(ref.source, f"hf_audio:{model_type}", (tower,), fingerprint_path(path), path)


@register_family(
    "hf_audio",
    _is_audio_encoder,
    "transformers audio encoder (Wav2Vec2, ...)",
    check=check_audio_pooling,
)
def load_hf_audio(ref: ModelRef, path: Path | None) -> LoadedModel:
    from transformers import AutoFeatureExtractor, AutoModel

    assert path is not None
    model_type = read_json(path, "config.json")["model_type"]
    if ref.task not in ("auto", "audio"):
        raise ModelLoadError(f"{ref.source} is an audio encoder; it has no {ref.task} tower")
    check_audio_pooling(ref, path)
    if model_type in SPECTROGRAM_ENCODERS:
        return load_spectrogram(ref, path, model_type)
    model = AutoModel.from_pretrained(path, attn_implementation="eager")
    if getattr(model.config, "add_adapter", False):
        raise ModelLoadError(f"{ref.source}: encoders with an adapter are not supported")
    extractor = AutoFeatureExtractor.from_pretrained(path)
    layers = layer_names(ref.layers, int(model.config.num_hidden_layers), ref.source)
    spec = audio_spec(extractor, model.config, ref.pooling)
    tower = Tower(
        "audio",
        AudioTower(model, layers, spec.masked, spec.sequence),
        layers,
        preprocess=spec,
        processor=extractor,
        sequence=spec.sequence,
    )
    return LoadedModel(ref.source, f"hf_audio:{model_type}", (tower,), fingerprint_path(path), path)
