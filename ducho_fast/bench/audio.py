"""The audio suite of `ducho-fast bench`: real-time factor (seconds of audio per second of wall
time) of whole extraction runs, against a Ducho-style eager loop.

The Ducho-style loop is what Ducho's audio path does per file: read it, mix to mono, resample
it alone, run the feature extractor and the eager transformers model at batch 1, and keep the
layer's frames (here mean-pooled, to compare). ducho-fast runs `extract` end to end (listing,
decoding and resampling in worker processes, batched inference, writing); exports and the
batch-size choice happen in an untimed first run. Jobs are interleaved repeat by repeat, so
machine load shifts all of them alike; medians are reported, with the load average.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ducho_fast.api import RunOptions, SingleModelJob, extract_single
from ducho_fast.bench.machine import machine_info
from ducho_fast.core.audio import read_audio, resample, to_mono
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.engine.sources import list_images

Log = Callable[[str], None]
DEFAULT_JOBS = ("onnxruntime:fp32", "onnxruntime:int8", "torch:fp32")


@dataclass(frozen=True)
class AudioBenchConfig:
    """One model over one or more folders of clips (each folder is measured on its own)."""

    model: str
    folders: tuple[Path, ...]
    output_dir: Path
    layer: str = "last_hidden_state"
    jobs: tuple[str, ...] = DEFAULT_JOBS  # runtime:precision
    batch_size: int = 16
    workers: int = 2
    repeats: int = 3
    limit: int | None = None
    label: str | None = None
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.label or Path(self.model).name


def clip_paths(folder: Path, limit: int | None) -> list[Path]:
    paths = [Path(item.path) for item in list_images(folder).items]
    audio = [p for p in paths if p.suffix.lower() in (".wav", ".ogg", ".flac", ".mp3", ".m4a")]
    return audio[:limit] if limit else audio


class DuchoStyleLoop:
    """Ducho's per-file audio loop, with the transformers model and its feature extractor."""

    def __init__(self, model_dir: str, layer: str):
        from transformers import AutoFeatureExtractor, AutoModel

        self.extractor = AutoFeatureExtractor.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
        self.layer = layer

    def __call__(self, paths: Sequence[Path]) -> np.ndarray:
        import torch

        rows = []
        rate = int(self.extractor.sampling_rate)
        with torch.inference_mode():
            for path in paths:
                data, native = read_audio(path)
                wave = resample(to_mono(data), native, rate)
                inputs = self.extractor(wave, sampling_rate=rate, return_tensors="pt")
                out = self.model(**inputs, output_hidden_states=self.layer.isdigit())
                frames = (
                    out.hidden_states[int(self.layer)]
                    if self.layer.isdigit()
                    else out.last_hidden_state
                )
                rows.append(frames[0].mean(0).numpy())
        return np.stack(rows)


def run_extract(
    config: AudioBenchConfig, folder: Path, job: str, out: Path, paths: Sequence[Path]
) -> np.ndarray:
    """One whole `extract --audio` run; the features in the order of `paths`."""
    runtime, precision = job.split(":")
    options = RunOptions(
        runtime=runtime,
        precision=precision,
        workers=config.workers,
        progress=False,
        overwrite=True,
    )
    layers = (config.layer,)
    job_spec = SingleModelJob(
        config.model, out, audio=folder, layers=layers, batch_size=config.batch_size
    )
    extract_single(job_spec, options)
    (features_dir,) = [p for p in out.glob("*/*") if (p / "features.npy").is_file()]
    ids = (features_dir / "ids.txt").read_text().split()
    rows = dict(zip(ids, np.load(features_dir / "features.npy"), strict=True))
    return np.stack([rows[p.stem] for p in paths])


def measure_folder(config: AudioBenchConfig, folder: Path, log: Log) -> dict[str, Any]:
    name = folder.name
    paths = clip_paths(folder, config.limit)
    # extract reads a whole folder: give it only the clips measured (no notes, no extras)
    folder = Path(tempfile.mkdtemp(prefix="ducho-fast-audio-bench-"))
    for path in paths:
        os.symlink(path.resolve(), folder / path.name)
    paths = [folder / path.name for path in paths]
    seconds = 0.0
    for path in paths:
        data, rate = read_audio(path)
        seconds += len(data) / rate
    log(f"audio bench {name}: {len(paths)} clips, {seconds:.1f} s of audio")
    loop = DuchoStyleLoop(config.model, config.layer)
    work = Path(tempfile.mkdtemp(prefix="ducho-fast-audio-bench-out-"))
    reference, features = None, {}
    times: dict[str, list[float]] = {"ducho-style": [], **{job: [] for job in config.jobs}}
    for job in config.jobs:  # exports, batch-size choice, warm caches: untimed
        log(f"  preparing {job}")
        run_extract(config, folder, job, work / "warm" / job.replace(":", "-"), paths)
    for repeat in range(config.repeats):
        start = time.perf_counter()
        reference = loop(paths)
        times["ducho-style"].append(time.perf_counter() - start)
        for job in config.jobs:
            out = work / f"r{repeat}" / job.replace(":", "-")
            start = time.perf_counter()
            features[job] = run_extract(config, folder, job, out, paths)
            times[job].append(time.perf_counter() - start)
            shutil.rmtree(out, ignore_errors=True)
        log(f"  repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()))
    shutil.rmtree(work, ignore_errors=True)
    assert reference is not None
    base = statistics.median(times["ducho-style"])
    rows = {"ducho-style": {"seconds": times["ducho-style"], "rtf": seconds / base, "speedup": 1.0}}
    for job in config.jobs:
        median = statistics.median(times[job])
        cosines = row_cosines(reference, features[job])
        rows[job] = {
            "seconds": times[job],
            "rtf": seconds / median,
            "speedup": base / median,
            "min_cosine_vs_ducho_style": float(cosines.min()),
            "mean_cosine_vs_ducho_style": float(cosines.mean()),
        }
    shutil.rmtree(folder, ignore_errors=True)
    return {"folder": name, "clips": len(paths), "audio_seconds": seconds, "jobs": rows}


def run_audio_bench(config: AudioBenchConfig, log: Log = print) -> dict[str, Any]:
    """Measure every folder; write `<name>.json` and `<name>.md` into `config.output_dir`."""
    result = {
        "model": config.model,
        "layer": config.layer,
        "batch_size": config.batch_size,
        "workers": config.workers,
        "repeats": config.repeats,
        "notes": config.notes,
        "machine": machine_info(),
        "sets": [measure_folder(config, Path(f), log) for f in config.folders],
        "load_average_at_end": list(os.getloadavg()),
    }
    config.output_dir.mkdir(parents=True, exist_ok=True)
    (config.output_dir / f"{config.name}.json").write_text(json.dumps(result, indent=2))
    (config.output_dir / f"{config.name}.md").write_text(report(config, result))
    return result


def report(config: AudioBenchConfig, result: dict[str, Any]) -> str:
    machine = result["machine"]
    lines = [
        f"# audio: {config.name} ({config.layer}, batch {config.batch_size}, "
        f"{config.workers} decode workers)",
        "",
        f"{machine['cpu']} ({machine['logical_cpus']} logical CPUs, "
        f"{', '.join(machine['cpu_features'])}); load average at start "
        f"{machine['load_average_at_start']}, at end {result['load_average_at_end']}. "
        f"Medians of {config.repeats} interleaved repeats.",
        "",
    ]
    for note in config.notes.values():
        lines += [note, ""]
    for found in result["sets"]:
        lines += [
            f"## {found['folder']}: {found['clips']} clips, "
            f"{found['audio_seconds']:.0f} s of audio",
            "",
            "| job | median wall s | real-time factor | vs Ducho-style | min cosine |",
            "|---|---:|---:|---:|---:|",
        ]
        for job, row in found["jobs"].items():
            cosine = row.get("min_cosine_vs_ducho_style")
            lines.append(
                f"| {job} | {statistics.median(row['seconds']):.2f} | {row['rtf']:.1f} | "
                f"{row['speedup']:.2f}x | {'' if cosine is None else f'{cosine:.6f}'} |"
            )
        lines.append("")
    return "\n".join(lines)
