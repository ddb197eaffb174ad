"""Audio decoding: any file libsndfile or FFmpeg reads -> mono float32 at a target rate.

libsndfile (`soundfile`) reads WAV (8/16/24/32-bit int, float), FLAC, OGG Vorbis/Opus and MP3
quickly and exactly; what it cannot read (M4A/AAC, WebM, ...) goes to FFmpeg (`av`). Both
detect the format from the file's content, never from its extension. Channels are averaged
to mono, then `soxr` resamples (its high-quality setting) to the model's rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ducho_fast.core.errors import ConfigError, DuchoFastError

AUDIO_EXTRA = "pip install 'ducho-fast[audio]'"
RESAMPLER = "soxr-HQ"  # part of the preprocessing spec, so of the fingerprint


class AudioDecodeError(DuchoFastError):
    """A file that holds no audio both decoders can read (empty, corrupt, not audio)."""


def need(module: str) -> Any:
    """Import an audio library, or say how to install it in one line."""
    from importlib import import_module

    try:
        return import_module(module)
    except ImportError:
        raise ConfigError(f"audio needs the {module!r} package: {AUDIO_EXTRA}") from None


def read_soundfile(path: str | Path) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 and the rate, through libsndfile."""
    soundfile = need("soundfile")
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    return data, int(rate)


def read_ffmpeg(path: str | Path) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 and the rate of the first audio stream, through FFmpeg."""
    av = need("av")
    with av.open(str(path)) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise AudioDecodeError("the file has no audio stream")
        # Planar float, the stream's own layout and rate: only the sample format changes.
        resampler = av.AudioResampler(format="fltp")
        blocks = []
        for frame in container.decode(stream):
            blocks += [f.to_ndarray() for f in resampler.resample(frame)]
        blocks += [f.to_ndarray() for f in resampler.resample(None)]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
    if not blocks or rate <= 0:
        return np.zeros((0, 1), np.float32), max(rate, 1)
    return np.concatenate(blocks, axis=1).T.astype(np.float32, copy=False), rate


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """libsndfile first (exact, fast), FFmpeg for what it cannot read."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise AudioDecodeError("empty file (0 bytes)")
    try:
        return read_soundfile(path)
    except ConfigError:
        raise
    except Exception as first:  # libsndfile refuses the format: FFmpeg may know it
        try:
            return read_ffmpeg(path)
        except ConfigError:
            raise
        except Exception as second:
            raise AudioDecodeError(
                f"neither libsndfile ({describe(first)}) nor FFmpeg ({describe(second)}) "
                "decodes it as audio"
            ) from None


def describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def to_mono(data: np.ndarray) -> np.ndarray:
    """Channels averaged (as Ducho's torchaudio path and the feature extractors expect)."""
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]


def resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return np.ascontiguousarray(wave, dtype=np.float32)
    soxr = need("soxr")
    return soxr.resample(wave, rate, target, quality="HQ").astype(np.float32, copy=False)


def decode_audio(path: str | Path, target_rate: int) -> np.ndarray:
    """The file as a mono float32 waveform at `target_rate`; AudioDecodeError when it holds
    no samples or non-finite ones."""
    data, rate = read_audio(path)
    if data.size == 0:
        raise AudioDecodeError("no audio samples (an empty or truncated file)")
    if not np.all(np.isfinite(data)):
        raise AudioDecodeError("the samples hold NaN or infinity")
    wave = resample(to_mono(data), rate, target_rate)
    if wave.size == 0:
        raise AudioDecodeError(f"too short: {len(data)} samples at {rate} Hz")
    return wave
