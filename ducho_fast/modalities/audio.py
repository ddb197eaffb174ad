"""The audio modality: files decoded, mixed to mono and resampled in worker processes, cut
into windows, and pooled per clip to one vector per layer.

Graph inputs are a batch of windows (`input_values` float32 (W, T), zero-padded, and its
`attention_mask`); each graph output is the layer's frames mean-pooled over the window's
valid (unpadded) frames, (W, D). The session the engine runs (`WindowedSession`) takes the
windows of a batch of clips plus `window_item` (which clip each window belongs to), runs them
in bounded chunks (equal-length groups for models that take no mask) and pools each clip's
windows weighted by their frame counts, so every clip gets one (1, D) row.

Windows: a clip up to `window_s` is one window (its features are the model's on the whole
clip). A longer clip is cut into windows of exactly `window_s`, starting every
`window_s - overlap_s` seconds, the last one ending at the clip's end; frames covered by two
windows count once per window. Memory per graph call is bounded by `CALL_SECONDS` of padded
audio, whatever the clip's length.

`pooling: none` (waveform encoders only; `AudioPreprocessSpec.pooling`): the graph returns
each window's frames `(W, F, D)`, padded frames zeroed, and each clip gets its whole frame
sequence `(T, D)`, T the model's frame count for the clip alone. A long clip's windows start
on the frame grid (every start a multiple of the encoder's total stride; the last window is
the shortest that ends at the clip's end from a grid point), so window frame j is clip frame
`start / stride + j`; the sequence is stitched from the windows, each overlap split at its
middle (`stitch`: frames up to the middle from the earlier window, the rest from the later),
so every frame comes from the window where it is furthest from an edge. Such frames differ
from one whole-clip pass (their attention sees their window, not the clip).

Spectrogram encoders (Whisper, AST, CLAP; `FeatureSpec`): the worker runs the model's own
feature extractor on each window, whose length is the model's input length (no overlap), so
every window is the same size: `input_values` holds the flat features, `attention_mask` the
frame mask the graph pools with, and `window_weight` each window's real samples.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ducho_fast.core.audio import RESAMPLER, AudioDecodeError, decode_audio
from ducho_fast.core.image import require_regular_file
from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Batch, Item, Shard
from ducho_fast.core.sequences import sequences
from ducho_fast.modalities.base import Feed, Inputs, MakeInputs, Sample
from ducho_fast.modalities.files import FileDataset, collate_files, within, worker_batches

SWEEP_PROBE_S = 10.0  # a clip read only to size the timing inputs: never waited on longer

SAMPLE_CLIPS = 16
CALL_SECONDS = 60.0  # padded audio per graph call: bounds memory for clips of any length
VALIDATION_SECONDS = (0.5, 3.7, 10.0)


@dataclass(frozen=True)
class AudioPreprocessSpec:
    """How a waveform becomes graph input: the model's rate, its feature extractor's
    normalisation, whether padded batches with an attention mask keep each clip's features
    (`masked`; else the model gets no mask and runs equal-length batches only), its
    convolutional frame geometry, and the windows."""

    sampling_rate: int
    normalize: bool
    masked: bool
    conv_kernels: tuple[int, ...]
    conv_strides: tuple[int, ...]
    window_s: float = 20.0
    overlap_s: float = 2.0
    resampler: str = RESAMPLER
    pooling: str = "mean"  # or "none": each clip's whole frame sequence (module docstring)

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv_kernels", tuple(int(k) for k in self.conv_kernels))
        object.__setattr__(self, "conv_strides", tuple(int(s) for s in self.conv_strides))
        if not 0 <= self.overlap_s < self.window_s:
            raise ValueError("audio windows need 0 <= overlap_s < window_s")
        if self.pooling not in POOLINGS:
            raise ValueError(f"unknown audio pooling {self.pooling!r}; use one of {POOLINGS}")
        if self.sequence and self.frames(self.window) <= self.hop // self.frame_stride:
            raise ValueError(
                "pooling none stitches windows that overlap by at least one frame: "
                f"overlap_s {self.overlap_s} is shorter than the encoder's receptive field"
            )

    def to_dict(self) -> dict:
        data = {
            "sampling_rate": self.sampling_rate,
            "normalize": self.normalize,
            "masked": self.masked,
            "conv_kernels": list(self.conv_kernels),
            "conv_strides": list(self.conv_strides),
            "window_s": self.window_s,
            "overlap_s": self.overlap_s,
            "resampler": self.resampler,
        }
        if self.sequence:  # only then: fingerprints of pooled outputs stay as they were
            data.update(pooling=self.pooling, stitch=STITCH_RULE)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AudioPreprocessSpec:
        return cls(
            int(data["sampling_rate"]),
            bool(data["normalize"]),
            bool(data["masked"]),
            tuple(data["conv_kernels"]),
            tuple(data["conv_strides"]),
            float(data["window_s"]),
            float(data["overlap_s"]),
            str(data.get("resampler", RESAMPLER)),
            str(data.get("pooling", "mean")),
        )

    @property
    def sequence(self) -> bool:
        """Each clip's frames are its output (`pooling: none`), not their mean."""
        return self.pooling == "none"

    @property
    def frame_stride(self) -> int:
        """Samples between two frames (the product of the convolutions' strides)."""
        return int(np.prod(self.conv_strides))

    @property
    def window(self) -> int:
        return round(self.window_s * self.sampling_rate)

    @property
    def hop(self) -> int:
        """Samples between window starts; on the frame grid for sequences (`window_bounds`)."""
        hop = self.window - round(self.overlap_s * self.sampling_rate)
        return hop - hop % self.frame_stride if self.sequence else hop

    def frames(self, samples: np.ndarray | int) -> np.ndarray:
        """Frames the convolutional encoder makes of `samples` (the models' own formula)."""
        length = np.asarray(samples, dtype=np.int64)
        for kernel, stride in zip(self.conv_kernels, self.conv_strides, strict=True):
            length = np.floor_divide(length - kernel, stride) + 1
        return length

    @property
    def min_samples(self) -> int:
        """The shortest input that gives one frame (the encoder's receptive field)."""
        size = 1
        for kernel, stride in reversed(
            list(zip(self.conv_kernels, self.conv_strides, strict=True))
        ):
            size = (size - 1) * stride + kernel
        return size


FEATURE_KINDS = ("whisper", "ast", "clap")
POOLINGS = ("mean", "none")
# How `pooling: none` cuts and stitches a long clip (part of the fingerprint through the spec).
STITCH_RULE = "frame-grid windows, each overlap split at its middle"


@dataclass(frozen=True)
class FeatureSpec:
    """A spectrogram encoder (Whisper, AST, CLAP): its own transformers feature extractor
    (rebuilt from `extractor_json` in each worker) turns each window into a fixed-size input.
    Windows are the model's own input length (`window_s`: Whisper's 30 s, AST's `max_length`
    frames, CLAP's `max_length_s`), so the extractor never pads past nor truncates a window:
    CLAP's random truncation never runs and features are deterministic."""

    kind: str
    sampling_rate: int
    extractor_class: str
    extractor_json: str
    feature_shape: tuple[int, ...]
    window_s: float
    overlap_s: float = 0.0
    resampler: str = RESAMPLER
    min_samples: int = 400  # 25 ms: one spectrogram frame

    masked = True  # every window has the same input size: batching never pads
    normalize = False
    sequence = False  # pooled per window: `pooling: none` is for waveform encoders only

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_shape", tuple(int(d) for d in self.feature_shape))
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"unknown spectrogram encoder kind {self.kind!r}")
        if not 0 <= self.overlap_s < self.window_s:
            raise ValueError("audio windows need 0 <= overlap_s < window_s")

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "sampling_rate": self.sampling_rate,
            "extractor_class": self.extractor_class,
            "extractor": json.loads(self.extractor_json),
            "feature_shape": list(self.feature_shape),
            "window_s": self.window_s,
            "overlap_s": self.overlap_s,
            "resampler": self.resampler,
            "min_samples": self.min_samples,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            str(data["kind"]),
            int(data["sampling_rate"]),
            str(data["extractor_class"]),
            json.dumps(data["extractor"], sort_keys=True),
            tuple(data["feature_shape"]),
            float(data["window_s"]),
            float(data["overlap_s"]),
            str(data.get("resampler", RESAMPLER)),
            int(data.get("min_samples", 400)),
        )

    @property
    def window(self) -> int:
        return round(self.window_s * self.sampling_rate)

    @property
    def hop(self) -> int:
        return self.window - round(self.overlap_s * self.sampling_rate)

    def features(self, window: np.ndarray) -> FeatureWindow:
        """One window through the model's feature extractor, exactly as eager callers run it."""
        out = extractor_call(self.kind, self.extractor_class, self.extractor_json, window)
        return FeatureWindow(
            np.ascontiguousarray(out[0].reshape(-1), dtype=np.float32),
            np.ascontiguousarray(out[1].reshape(-1), dtype=np.int64),
            float(len(window)),
        )


@dataclass(frozen=True, eq=False)
class FeatureWindow:
    """A spectrogram encoder's input for one window: the extractor's features (flat), the
    frame mask the graph pools with (Whisper: which mel frames hold real audio; others: a
    placeholder), and the window's real samples (its weight when a clip's windows are
    pooled)."""

    values: np.ndarray
    mask: np.ndarray
    weight: float


@functools.cache
def feature_extractor(class_name: str, config: str) -> Any:
    import transformers

    return getattr(transformers, class_name).from_dict(json.loads(config))


def single_threaded_torch() -> None:
    """In a forked decode worker: Whisper's extractor computes its STFT with torch when torch
    is installed, and torch's OpenMP pool, inherited from a parent that already ran torch (an
    export), hangs the child. One thread, as torch's DataLoader workers; checked on every
    call, since the cached extractor may have been built in the parent before the fork."""
    import multiprocessing
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)


def extractor_call(
    kind: str, class_name: str, config: str, window: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(features of one window, frame mask). Whisper pads to its 30 s with the mask of the
    real frames; AST pads or cuts to `max_length` frames; CLAP repeats a short window to its
    10 s (`repeatpad`), and a window is never longer, so it never truncates at random."""
    extractor = feature_extractor(class_name, config)
    rate = int(extractor.sampling_rate)
    if kind == "whisper":
        single_threaded_torch()
        out = extractor(window, sampling_rate=rate, return_attention_mask=True, return_tensors="np")
        return out["input_features"][0], out["attention_mask"][0]
    out = extractor(window, sampling_rate=rate, return_tensors="np")
    values = out["input_values"] if kind == "ast" else out["input_features"]
    return values[0], np.ones(1, np.int64)


AnySpec = AudioPreprocessSpec | FeatureSpec


def window_bounds(samples: int, spec: AnySpec) -> list[tuple[int, int]]:
    """[start, end) of each window: the whole clip, or windows of exactly `spec.window`
    (for sequences, starts on the frame grid and a last window that may be up to a frame's
    stride shorter: see the module docstring)."""
    size = spec.window
    if samples <= size:
        return [(0, samples)]
    if spec.sequence:
        stride = spec.frame_stride
        last = -(-(samples - size) // stride) * stride  # the first grid point from the end
        starts = [*range(0, samples - size, spec.hop), last]
        return [(start, min(start + size, samples)) for start in starts]
    starts = [*range(0, samples - size, spec.hop), samples - size]
    return [(start, start + size) for start in starts]


@dataclass(frozen=True, eq=False)
class ClipWindows:
    """One clip's model-input windows and where each starts in the clip (samples)."""

    windows: tuple[Any, ...]
    starts: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> Any:
        return self.windows[index]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.windows)


def one_window(window: Any) -> ClipWindows:
    """A window alone, as a clip of its own (timing and sweep inputs)."""
    return ClipWindows((window,), (0,))


def normalize(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance: the transformers feature extractors' `do_normalize`."""
    return (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)


def clip_windows(wave: np.ndarray, spec: AnySpec) -> ClipWindows:
    """A decoded clip as the model's input windows; too short a clip is an error."""
    if len(wave) < spec.min_samples:
        raise AudioDecodeError(
            f"too short: {len(wave)} samples at {spec.sampling_rate} Hz; the model needs at "
            f"least {spec.min_samples} ({spec.min_samples / spec.sampling_rate * 1000:.0f} ms)"
        )
    bounds = window_bounds(len(wave), spec)
    starts = tuple(start for start, _ in bounds)
    windows = [wave[start:end] for start, end in bounds]
    if isinstance(spec, FeatureSpec):
        return ClipWindows(tuple(spec.features(w) for w in windows), starts)
    prepared = [normalize(w) if spec.normalize else w for w in windows]
    return ClipWindows(tuple(np.ascontiguousarray(w, dtype=np.float32) for w in prepared), starts)


def pad_windows(windows: Sequence[np.ndarray]) -> Inputs:
    """Graph input: windows zero-padded to the longest, and which samples are real."""
    longest = max(len(w) for w in windows)
    values = np.zeros((len(windows), longest), np.float32)
    mask = np.zeros((len(windows), longest), np.int64)
    for row, window in enumerate(windows):
        values[row, : len(window)] = window
        mask[row, : len(window)] = 1
    return {"input_values": values, "attention_mask": mask}


def stack_features(windows: Sequence[FeatureWindow]) -> Inputs:
    """Graph input of a spectrogram encoder: equal-size windows, stacked (no padding)."""
    return {
        "input_values": np.stack([w.values for w in windows]),
        "attention_mask": np.stack([w.mask for w in windows]),
    }


def batch_inputs(per_item: Sequence[ClipWindows]) -> Inputs:
    """The windows of several clips as one input set, with the clip of each window and where
    it starts in its clip (and, for spectrogram encoders, each window's weight in its clip's
    pooling)."""
    windows = [w for item in per_item for w in item]
    owners = np.repeat(np.arange(len(per_item)), [len(item) for item in per_item])
    starts = np.array([s for item in per_item for s in item.starts], np.int64)
    if windows and isinstance(windows[0], FeatureWindow):
        weights = np.array([w.weight for w in windows], np.float64)
        inputs = {**stack_features(windows), "window_weight": weights}
    else:
        inputs = pad_windows(windows)
    return {**inputs, "window_item": owners.astype(np.int64), "window_start": starts}


# --- the session the engine runs ------------------------------------------------------------


def call_groups(lengths: np.ndarray, masked: bool, budget: int) -> list[np.ndarray]:
    """Windows (indices) per graph call: equal lengths only for a model without a mask (a
    group-normalised encoder changes with padding), at most `budget` padded samples a call."""
    order = np.argsort(-lengths, kind="stable")
    keys = np.zeros_like(lengths) if masked else lengths
    groups: list[np.ndarray] = []
    for key in dict.fromkeys(keys[order].tolist()):
        members = order[keys[order] == key]
        start = 0
        while start < len(members):
            longest = int(lengths[members[start]])
            count = max(1, budget // max(longest, 1))
            groups.append(members[start : start + count])
            start += count
    return groups


class WindowedSession:
    """Clips in, one pooled row per clip out (or, for `pooling: none`, each clip's stitched
    frame sequence: a `core.sequences` object array of `(T, D)`), over a session that runs
    windows (see module docstring)."""

    def __init__(self, inner: Any, spec: AnySpec):
        self.inner = inner
        self.spec = spec
        self.input_names = ("input_values", "attention_mask", "window_item", "window_start")
        self.output_names = tuple(inner.output_names)
        self.budget = round(CALL_SECONDS * spec.sampling_rate)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values, mask = inputs["input_values"], inputs["attention_mask"]
        owners = np.asarray(inputs["window_item"], dtype=np.int64)
        if isinstance(self.spec, FeatureSpec):  # equal-size windows: chunks, no trimming
            lengths = np.full(len(values), self.spec.window)
            weights = np.asarray(inputs["window_weight"], np.float64)
        else:
            lengths = mask.sum(axis=1)
            weights = self.spec.frames(lengths)
        if self.spec.sequence:
            starts = np.asarray(inputs["window_start"], np.int64) // self.spec.frame_stride
            frames = self.run_frames(values, mask, lengths, weights)
            return {name: stitch_clips(parts, owners, starts) for name, parts in frames.items()}
        per_window: dict[str, np.ndarray] = {}
        for group, outputs in self.graph_calls(values, mask, lengths):
            for name, array in outputs.items():
                out = per_window.setdefault(name, np.zeros((len(values), array.shape[1]), "f4"))
                out[group] = array
        return {name: pool(array, owners, weights) for name, array in per_window.items()}

    def run_frames(
        self, values: np.ndarray, mask: np.ndarray, lengths: np.ndarray, frames: np.ndarray
    ) -> dict[str, list[np.ndarray]]:
        """Each window's valid frames `(F, D)` per output (the graph zeroes padded ones)."""
        per_window: dict[str, list[np.ndarray]] = {}
        for group, outputs in self.graph_calls(values, mask, lengths):
            for name, array in outputs.items():
                out = per_window.setdefault(name, [np.empty((0, 0), np.float32)] * len(values))
                for row, window in enumerate(group):
                    out[window] = array[row, : int(frames[window])]
        return per_window

    def graph_calls(
        self, values: np.ndarray, mask: np.ndarray, lengths: np.ndarray
    ) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """The windows (indices) of each graph call and its outputs, row by row."""
        trim = not isinstance(self.spec, FeatureSpec)  # equal-size windows: no trimming
        for group in call_groups(lengths, self.spec.masked, self.budget):
            yield group, self.inner.run(chunk_inputs(values, mask, group, lengths, trim))


def chunk_inputs(
    values: np.ndarray, mask: np.ndarray, group: np.ndarray, lengths: np.ndarray, trim: bool
) -> Inputs:
    """One graph call's windows; waveforms trimmed to the group's longest."""
    longest = int(lengths[group].max()) if trim else values.shape[1]
    width = longest if trim else mask.shape[1]
    return {
        "input_values": np.ascontiguousarray(values[group, :longest]),
        "attention_mask": np.ascontiguousarray(mask[group, :width]),
    }


def stitch(parts: Sequence[np.ndarray], starts: Sequence[int]) -> np.ndarray:
    """One clip's frames `(T, D)` from its windows' frames (`starts`: each window's first
    frame in the clip). Where two windows overlap, frames up to the overlap's middle come
    from the earlier window and the rest from the later one, so each frame comes from the
    window where it is furthest from an edge (a tie goes to the earlier window)."""
    pieces, taken = [], int(starts[0])
    for k, part in enumerate(parts):
        first, end = int(starts[k]), int(starts[k]) + len(part)
        cut = end if k + 1 == len(parts) else (int(starts[k + 1]) + end - 1) // 2 + 1
        if not first <= taken <= cut <= end:
            raise ValueError(
                f"audio windows do not overlap: window {k} holds frames {first}..{end - 1}, "
                f"the next starts at frame {starts[k + 1]}"
            )
        pieces.append(part[taken - first : cut - first])
        taken = cut
    return np.ascontiguousarray(np.concatenate(pieces), dtype=np.float32)


def stitch_clips(parts: Sequence[np.ndarray], owners: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each clip's stitched frames, as rows of variable length (`core.sequences`)."""
    clips = int(owners.max()) + 1 if len(owners) else 0
    rows = []
    for clip in range(clips):
        windows = np.flatnonzero(owners == clip)
        rows.append(stitch([parts[w] for w in windows], starts[windows].tolist()))
    return sequences(rows)


def pool(per_window: np.ndarray, owners: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Each clip's windows averaged with their frame counts as weights; a clip of one window
    keeps that window's row exactly."""
    clips = int(owners.max()) + 1 if len(owners) else 0
    weights = frames.astype(np.float64)
    total = np.zeros((clips, per_window.shape[1]), np.float64)
    np.add.at(total, owners, per_window.astype(np.float64) * weights[:, None])
    pooled = (total / np.bincount(owners, weights, clips)[:, None]).astype(np.float32)
    single = np.bincount(owners, minlength=clips) == 1
    pooled[single] = per_window[np.searchsorted(owners, np.flatnonzero(single))]
    return pooled


# --- decoding in workers ---------------------------------------------------------------------


class AudioDataset(FileDataset):
    """Decode once per sampling rate, window per spec."""

    def __init__(self, items: Sequence[Item], specs: Mapping[str, AnySpec], timeout_s: float):
        super().__init__(items, timeout_s)
        self.specs = dict(specs)

    def read(self, item: Item) -> dict[int, np.ndarray]:
        rates = {spec.sampling_rate for spec in self.specs.values()}
        return {rate: decode_audio(item.path, rate) for rate in sorted(rates)}

    def prepare(self, waves: dict[int, np.ndarray]) -> dict[str, ClipWindows]:
        return {k: clip_windows(waves[s.sampling_rate], s) for k, s in self.specs.items()}


collate_audio = partial(collate_files, combine=batch_inputs)


def audio_batches(
    items: Sequence[Item],
    specs: Mapping[str, AnySpec],
    shards: Sequence[Shard],
    options: PipelineOptions,
    timer: StageTimer,
) -> Iterator[Batch]:
    """Batches of clips' windows, decoded by worker processes (or inline), in order."""
    dataset = AudioDataset(items, specs, options.item_timeout_s)
    return worker_batches(dataset, collate_audio, shards, options, timer)


# --- validation and calibration inputs ------------------------------------------------------


def synthetic_wave(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Speech-like test signal: a few harmonics with a wandering pitch, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    pitch = 120 + 60 * np.sin(2 * np.pi * rng.uniform(0.3, 2.0) * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    wave = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2
    return (wave + rng.normal(0, 0.02, len(t))).astype(np.float32)


def sample_waves(spec: AnySpec, sample: Sample) -> list[np.ndarray]:
    waves = []
    for path in sample.get("audio"):
        try:
            waves.append(decode_audio(path, spec.sampling_rate))
        except Exception:  # a file that does not decode is left out of the sample
            continue
    return waves


def fit_length(wave: np.ndarray, samples: int) -> np.ndarray:
    return np.resize(wave, samples) if len(wave) < samples else wave[:samples]


def case_inputs(
    spec: AnySpec, waves: Sequence[np.ndarray], seconds: float, batch: int, seed: int
) -> Inputs:
    """`batch` windows of about `seconds` (mixed lengths where the model takes a mask, so
    padding is exercised; equal lengths where it does not), from the user's clips or
    synthetic ones."""
    rate = spec.sampling_rate
    windows = []
    for row in range(batch):
        shrink = 1.0 - 0.4 * row / max(batch, 1) if spec.masked else 1.0
        samples = max(round(seconds * rate * shrink), spec.min_samples)
        source = (
            waves[(seed + row) % len(waves)] if waves else synthetic_wave(seconds, rate, seed + row)
        )
        window = np.asarray(fit_length(source, samples), np.float32)
        windows.append(normalize(window) if spec.normalize else window)
    if isinstance(spec, FeatureSpec):
        return stack_features([spec.features(w) for w in windows])
    return pad_windows(windows)


def audio_cases(spec: AnySpec, sample: Sample) -> list[tuple[str, Inputs]]:
    waves = sample_waves(spec, sample)
    source = ",sample clips" if waves else ""
    cases = []
    for n, seconds in enumerate(VALIDATION_SECONDS):
        for batch in (1, 3):
            inputs = case_inputs(spec, waves, seconds, batch, seed=10 * n + batch)
            cases.append((f"batch={batch},len={seconds:g}s{source}", inputs))
    inputs = case_inputs(spec, waves, VALIDATION_SECONDS[0], 17, seed=99)
    cases.append((f"batch=17,len={VALIDATION_SECONDS[0]:g}s{source}", inputs))
    return cases


def spec_key(spec: AnySpec) -> str:
    text = json.dumps(spec.to_dict(), sort_keys=True)
    return "a" + hashlib.sha256(text.encode()).hexdigest()[:16]


def payload_windows(payload: Any, spec: AnySpec) -> ClipWindows:
    """A path (decoded), or a mono waveform already at the model's rate."""
    if isinstance(payload, (str, Path)):
        wave = decode_audio(payload, spec.sampling_rate)
    else:
        wave = np.asarray(payload, dtype=np.float32).reshape(-1)
    return clip_windows(wave, spec)


class AudioModality:
    name = "audio"
    input_names = ("input_values", "attention_mask")
    starts_early = True
    holds_out_sample = True

    def input_axes(self) -> dict[str, dict[int, str]]:
        return {name: {0: "batch", 1: "time"} for name in self.input_names}

    def spec_from_dict(self, data: Mapping[str, Any]) -> AnySpec:
        if "extractor" in data:
            return FeatureSpec.from_dict(data)
        return AudioPreprocessSpec.from_dict(data)

    def example_inputs(self, tower: Any) -> Inputs:
        spec: AnySpec = tower.preprocess
        rate = spec.sampling_rate
        if isinstance(spec, FeatureSpec):  # a short and a shorter clip: Whisper's mask varies
            waves = [synthetic_wave(1.0, rate, 0), synthetic_wave(0.5, rate, 1)]
            return stack_features([spec.features(w) for w in waves])
        inputs = pad_windows([synthetic_wave(1.0, rate, 0), synthetic_wave(1.0, rate, 1)])
        if spec.masked:  # a padded row, so the mask's path is traced
            inputs["input_values"][1, rate // 2 :] = 0
            inputs["attention_mask"][1, rate // 2 :] = 0
        return inputs

    def validation_cases(self, tower: Any, sample: Sample) -> list[tuple[str, Inputs]]:
        """0.5 s, 3.7 s and 10 s at batch 1 and 3, and 17 short clips."""
        return audio_cases(tower.preprocess, sample)

    def artifact_cases(self, feed: Feed, sample: Sample) -> list[tuple[str, Inputs]]:
        return audio_cases(feed.prepare, sample)

    def calibration_batches(self, tower: Any, sample: Sample) -> list[Inputs]:
        spec: AnySpec = tower.preprocess
        firsts = [
            clip_windows(w, spec)[0]
            for w in sample_waves(spec, sample)
            if len(w) >= spec.min_samples
        ]
        if isinstance(spec, FeatureSpec):
            return [stack_features(firsts[i : i + 4]) for i in range(0, len(firsts), 4)]
        cut = [w[: round(10 * spec.sampling_rate)] for w in firsts]
        if not spec.masked:
            return [pad_windows([w]) for w in cut]
        return [pad_windows(cut[i : i + 4]) for i in range(0, len(cut), 4)]

    def save_processor(self, tower: Any, folder: Path) -> str | None:
        return None  # the spec in the manifest is all an audio graph needs

    def eager_feed(self, tower: Any, key: str) -> Feed:
        return Feed(key, tower.preprocess)

    def artifact_feed(self, folder: Path, processor_dir: str | None, spec: Any, key: str) -> Feed:
        return Feed(key, spec)

    def feed_key(self, spec: Any, index: int) -> str:
        return spec_key(spec)

    def wrap_session(self, session: Any, feed: Feed) -> Any:
        return WindowedSession(session, feed.prepare)

    def export_sample(self, items: Sequence[Item], timeout_s: float = 60.0) -> Sample:
        """An even spread of the pass's clips that decode (in `timeout_s`)."""
        usable = []
        for item in items[:: max(len(items) // SAMPLE_CLIPS, 1)][:SAMPLE_CLIPS]:
            try:
                within(timeout_s, partial(decode_audio, item.path, 16000))
            except Exception:  # any file that does not decode is just left out of the sample
                continue
            usable.append(Path(item.path))
        return Sample(other=(("audio", tuple(usable)),))

    def sweep_inputs(self, feed: Feed, items: Sequence[Item]) -> MakeInputs:
        """Clips as long as the run's own (the median of a few), one window each."""
        spec: AnySpec = feed.prepare
        if isinstance(spec, FeatureSpec):  # every window is the model's fixed input size
            fixed = clip_windows(synthetic_wave(2.0, spec.sampling_rate, 0), spec)[0]
            return lambda size: batch_inputs([one_window(fixed)] * size)
        lengths = []
        for item in items[:: max(len(items) // 8, 1)][:8]:
            try:  # a FIFO or a stalled file must not hold the sweep (the run records them)
                require_regular_file(item.path)
                windows = within(SWEEP_PROBE_S, partial(payload_windows, item.path, spec))
                lengths.append(len(windows[0]))
            except Exception:  # only a timing input: unreadable clips are skipped
                continue
        seconds = float(np.median(lengths)) / spec.sampling_rate if lengths else 5.0
        window = clip_windows(synthetic_wave(seconds, spec.sampling_rate, 0), spec)[0]
        return lambda size: batch_inputs([one_window(window)] * size)

    def batches(
        self,
        items: Sequence[Item],
        feeds: Mapping[str, Feed],
        shards: Sequence[Shard],
        options: PipelineOptions,
        timer: StageTimer,
    ) -> Iterator[Batch]:
        specs = {key: feed.prepare for key, feed in feeds.items()}
        return audio_batches(items, specs, shards, options, timer)

    def encode_batches(
        self, feed: Feed, payloads: Sequence[Any], batch_size: int
    ) -> Iterator[tuple[np.ndarray, Inputs]]:
        for start in range(0, len(payloads), batch_size):
            chunk = payloads[start : start + batch_size]
            per_item = [payload_windows(p, feed.prepare) for p in chunk]
            yield np.arange(start, start + len(chunk)), batch_inputs(per_item)
