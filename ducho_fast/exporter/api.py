"""`export()`: load a model, export each tower, validate against eager, write the artifact.

The artifact is built in a staging folder beside the target and renamed into place only after
every graph passed its gate, so no folder is ever left looking valid when it is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ducho_fast.artifact.manifest import (
    MANIFEST_NAME,
    NOT_HASHED,
    SCHEMA_VERSION,
    GraphInfo,
    Manifest,
    graph_io,
    hash_folder,
    library_versions,
    write_manifest,
)
from ducho_fast.core import log as logs
from ducho_fast.core.cache import Remembered, resolve_cache_dir
from ducho_fast.core.errors import ConfigError, ExportValidationError
from ducho_fast.core.machine import machine_key
from ducho_fast.exporter.onnx_export import DEFAULT_OPSET, export_tower
from ducho_fast.exporter.quantize import (
    MAX_FP32_CONV_SHARE,
    Int8Candidate,
    Int8Mode,
    attention_only,
    fp32_conv_share,
    int8_candidates,
    time_session,
    to_fp16,
)
from ducho_fast.exporter.validate import (
    CaseResult,
    raise_on_failures,
    summarize,
    validate_tower,
    validation_cases,
)
from ducho_fast.modalities import Sample, modality
from ducho_fast.models.registry import load_model
from ducho_fast.models.spec import LoadedModel, ModelRef, Tower
from ducho_fast.models.towers import item_shapes
from ducho_fast.runtime.onnxruntime import OrtSession
from ducho_fast.runtime.table import EXPORT_PRECISIONS

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS = EXPORT_PRECISIONS

log = logs.get("export")


@dataclass(frozen=True)
class ExportConfig:
    model: ModelRef
    output_dir: Path | str
    precision: Precision = "fp32"
    opset: int = DEFAULT_OPSET
    int8_mode: Int8Mode = "auto"
    sample: Sample = field(default_factory=Sample)
    tensorrt: bool = False
    towers: tuple[str, ...] = ()  # the towers to export; () for every tower of the model

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", Path(self.output_dir))  # str or Path
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; use one of {PRECISIONS}")
        if (
            self.tensorrt
            and self.precision == "int8"
            and not (self.sample.images or self.sample.texts)
        ):
            raise ConfigError(
                "TensorRT int8 runs only static (QDQ) int8, calibrated on your data: give "
                "--sample-images or --sample-texts, or export fp16 for TensorRT"
            )


@dataclass(frozen=True)
class TowerExport:
    info: GraphInfo
    results: tuple[CaseResult, ...]


def export(config: ExportConfig) -> Path:
    """Export `config.model` to a validated artifact folder and return its path."""
    if config.tensorrt:  # fail before minutes of export work, not after
        from ducho_fast.exporter.tensorrt_artifact import check_tensorrt_available

        check_tensorrt_available()
    target = Path(config.output_dir)
    kept = files_not_ours(target)  # refuses a folder that is not an artifact, before any work
    log.info(
        "exporting %s (%s) to %s: loading the model", config.model.source, config.precision, target
    )
    loaded = load_model(config.model)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(target.parent)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(target), dir=target.parent))
    try:
        graphs = [
            export_one(tower, staging, config, loaded.fingerprint)
            for tower in chosen_towers(loaded.towers, config.towers, config.model.source)
        ]
        tokenizer_dir = save_processor(loaded, staging)
        manifest = build_manifest(loaded, config, graphs, tokenizer_dir, staging)
        write_manifest(staging, manifest)
        if config.tensorrt:
            from ducho_fast.exporter.tensorrt_artifact import add_tensorrt_engines

            manifest = add_tensorrt_engines(staging, manifest)
        replace_folder(staging, target, kept)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("exported %s: %s", config.model.source, target)
    return target


def chosen_towers(towers: Sequence[Tower], wanted: Sequence[str], source: str) -> list[Tower]:
    if not wanted:
        return list(towers)
    missing = sorted(set(wanted) - {tower.name for tower in towers})
    if missing:
        names = ", ".join(tower.name for tower in towers)
        raise ConfigError(f"{source} has no {' or '.join(missing)} tower (it has: {names})")
    return [tower for tower in towers if tower.name in wanted]


# `.<name>.staging-<host>-<pid>-<random>`: an export killed before its `finally` (SIGTERM,
# SIGKILL, the OOM killer) leaves its staging folder; the next export beside it removes it
# once that process is gone. `.old-` folders of a swap cut short the same way.
STAGING = re.compile(r"^\..+\.(?:staging|old)-(?P<host>.+)-(?P<pid>\d+)-[^-]*$")


def staging_prefix(target: Path) -> str:
    return f".{target.name}.staging-{socket.gethostname()}-{os.getpid()}-"


def remove_dead_staging(folder: Path) -> None:
    """Remove staging folders of exports on this host whose process no longer exists."""
    if not folder.is_dir():
        return
    host = socket.gethostname()
    for entry in folder.iterdir():
        found = STAGING.match(entry.name)
        if found and found["host"] == host and not process_alive(int(found["pid"])):
            shutil.rmtree(entry, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def export_one(tower: Tower, staging: Path, config: ExportConfig, model_id: str) -> GraphInfo:
    log.info("%s tower: tracing to ONNX (opset %d)", tower.name, config.opset)
    fp32_path = export_tower(tower, staging / f"{tower.name}.fp32.onnx", config.opset)
    log.info("%s tower: validating fp32 against eager PyTorch", tower.name)
    fp32_results = validate_tower(tower, OrtSession(fp32_path), "fp32", config.sample)
    raise_on_failures(fp32_results, "fp32")
    final = staging / f"{tower.name}.onnx"
    quantization = None
    speed: dict[str, float] = {}
    if config.precision == "fp32":
        os.replace(fp32_path, final)
        results = fp32_results
    elif config.precision == "fp16":
        log.info("%s tower: converting to fp16 and validating", tower.name)
        to_fp16(fp32_path, final)
        results = validate_tower(tower, OrtSession(final), "fp16", config.sample)
        raise_on_failures(results, "fp16")
        fp32_path.unlink()
    else:
        quantization, results, int8_seconds = pick_int8(tower, fp32_path, final, config, model_id)
        speed = int8_speed(tower, fp32_path, int8_seconds, quantization)
        fp32_path.unlink()
    inputs, outputs = graph_io(final)
    return GraphInfo(
        name=tower.name,
        file=final.name,
        precision=config.precision,
        quantization=quantization,
        inputs=inputs,
        outputs=outputs,
        preprocess=tower.preprocess.to_dict() if tower.preprocess is not None else None,
        item_shapes={k: list(v) for k, v in item_shapes(tower).items()} or None,
        validation={
            "fp32": summarize(fp32_results, "fp32"),
            **(
                {config.precision: {**summarize(results, config.precision), **speed}}
                if config.precision != "fp32"
                else {}
            ),
        },
    )


def int8_speed(tower: Tower, fp32_path: Path, int8_seconds: float, mode: str) -> dict[str, float]:
    """How much faster the int8 graph runs than fp32 on ONNX Runtime here, said loudly when
    it is not: ONNX Runtime's int8 convolutions can be slower than its fp32 ones (ResNet-50
    static QDQ: 0.6x on an AMD EPYC), while OpenVINO runs the same QDQ graph 3.6x fp32."""
    fp32_seconds = time_session(OrtSession(fp32_path), validation_cases(tower)[-1][1])
    speedup = fp32_seconds / int8_seconds
    if speedup < 1.0:
        log.warning(
            "%s tower: int8 (%s) runs at %.2fx the fp32 graph under ONNX Runtime on this CPU; "
            "OpenVINO runs QDQ int8 graphs fast (--runtime openvino --precision int8)",
            tower.name,
            mode,
            speedup,
        )
    return {"ort_speedup_vs_fp32": speedup}


def pick_int8(
    tower: Tower, fp32_path: Path, final: Path, config: ExportConfig, model_id: str = ""
) -> tuple[str, list[CaseResult], float]:
    """Try the int8 variants; keep the fastest that meets the gate, else fail with all numbers.

    In `auto` mode, when every full variant fails, one more is tried with the feed-forward
    projections kept in fp32 (slower than full int8, faster than fp32). The variant chosen
    by timing is remembered per model, tower and CPU, and chosen again by later exports while
    it passes the gate, so re-exports under different load do not flip between variants."""
    log.info("%s tower: quantizing to int8 (%s)", tower.name, config.int8_mode)
    calibrate_on, held_out = split_sample(config.sample, tower.name)
    calibration = calibration_batches(tower, calibrate_on)
    candidates = int8_in_effect(
        int8_candidates(fp32_path, final.parent, config.int8_mode, calibration, config.tensorrt),
        fp32_path,
        tower.name,
    )
    passing: list[tuple[float, str, Path, list[CaseResult]]] = []
    failures: list[ExportValidationError] = []
    timing_inputs = validation_cases(tower)[-1][1]

    def gate(candidate: Int8Candidate) -> None:
        log.info("%s tower: validating int8 (%s)", tower.name, candidate.mode)
        try:
            session = OrtSession(candidate.path)
            results = validate_tower(tower, session, "int8", held_out)
            raise_on_failures(results, "int8")
        except ExportValidationError as exc:
            failures.append(exc)
            return
        except Exception as exc:  # a variant ORT cannot run (WavLM's quantised position
            # buckets index out of range under static QDQ) fails its gate, like a wrong one
            log.info("%s tower: int8 (%s) does not run: %s", tower.name, candidate.mode, exc)
            failures.append(ExportValidationError(f"int8 ({candidate.mode} does not run)", []))
            return
        passing.append(
            (time_session(session, timing_inputs), candidate.mode, candidate.path, results)
        )

    for candidate in candidates:
        gate(candidate)
    if not passing and config.int8_mode == "auto" and not config.tensorrt:
        fallback = attention_only(fp32_path, final.parent)
        if fallback is not None:
            candidates.append(fallback)
            gate(fallback)
    if not passing:
        mismatches = [m for exc in failures for m in exc.mismatches]
        tried = ", ".join(c.mode for c in candidates)
        raise ExportValidationError(f"int8 ({tried}; keep fp32 for this model)", mismatches)
    memory = Int8Choices(resolve_cache_dir())
    key = memory.key(model_id, tower.name, config)
    remembered = [item for item in passing if item[1] == memory.get(key)]
    seconds, mode, path, results = remembered[0] if remembered else min(passing, key=lambda i: i[0])
    memory.put(key, mode)
    log.info("%s tower: int8 keeps %s (fastest of %d passing)", tower.name, mode, len(passing))
    os.replace(path, final)
    for candidate in candidates:
        candidate.path.unlink(missing_ok=True)
    return mode, results, seconds


def int8_in_effect(
    candidates: list[Int8Candidate], fp32_path: Path, tower: str
) -> list[Int8Candidate]:
    """The candidates that really compute in int8; refuses when none does.

    ONNX Runtime's dynamic int8 quantizes MatMul/Gemm only: on a CNN its graph is the fp32
    graph in effect, and keeping it would label fp32 arithmetic int8."""
    kept = []
    for candidate in candidates:
        share = fp32_conv_share(candidate.path, fp32_path)
        if share > MAX_FP32_CONV_SHARE:
            log.warning(
                "%s tower: int8 (%s) skipped: %.0f%% of its multiply-adds stay in fp32 "
                "convolutions, so it is not int8 in effect",
                tower,
                candidate.mode,
                100 * share,
            )
            candidate.path.unlink(missing_ok=True)
        else:
            kept.append(candidate)
    if candidates and not kept:
        raise ConfigError(
            f"{tower} tower: int8 without calibration quantizes MatMul/Gemm only, and this "
            "model computes mostly in convolutions, which would stay fp32 under an int8 label: "
            "give a calibration sample (--sample-images; `extract` calibrates on the run's "
            "items) for static int8, or use --runtime openvino --precision int8 (NNCF)"
        )
    return kept


class Int8Choices(Remembered):
    """The int8 variant each (model, tower, mode, target, CPU) got, in the cache folder (a
    read-only cache loses the memory, not the export)."""

    def __init__(self, cache_dir: Path):
        super().__init__(cache_dir / "int8-choices.json")

    def key(self, model_id: str, tower: str, config: ExportConfig) -> str:
        parts = [model_id, tower, config.int8_mode, config.tensorrt, machine_key()]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]

    def get(self, key: str) -> str | None:
        return self.entry(key)

    def put(self, key: str, mode: str) -> None:
        if self.entry(key) != mode:
            self.remember(key, mode)


def split_sample(sample: Sample, modality_name: str, every: int = 4) -> tuple[Sample, Sample]:
    """Calibrate static int8 on most of the user's sample and gate it on the rest (every
    `every`-th item), so the gate never sees the data the quantizer was fitted to (for
    modalities that validate on sample items; others calibrate on all of it)."""
    items = sample.get(modality_name)
    if len(items) < 2 or not modality(modality_name).holds_out_sample:
        return sample, sample
    held = tuple(p for i, p in enumerate(items) if i % every == every - 1) or items[-1:]
    fitted = tuple(p for p in items if p not in held)
    return sample.with_items(modality_name, fitted), sample.with_items(modality_name, held)


def calibration_batches(tower: Tower, sample: Sample) -> list[dict[str, np.ndarray]]:
    """Calibration inputs from the user's sample, or none."""
    return modality(tower.name).calibration_batches(tower, sample)


def save_processor(loaded: LoadedModel, staging: Path) -> str | None:
    """The first tower's processor (a CLIP model's towers share one tokenizer folder)."""
    for tower in loaded.towers:
        saved = modality(tower.name).save_processor(tower, staging)
        if saved is not None:
            return saved
    return None


def build_manifest(
    loaded: LoadedModel,
    config: ExportConfig,
    graphs: Sequence[GraphInfo],
    tokenizer_dir: str | None,
    staging: Path,
) -> Manifest:
    return Manifest(
        schema_version=SCHEMA_VERSION,
        source=loaded.source,
        family=loaded.family,
        fingerprint=loaded.fingerprint,
        task="-".join(graph.name for graph in graphs),
        precision=config.precision,
        opset=config.opset,
        tokenizer_dir=tokenizer_dir,
        graphs=list(graphs),
        files=hash_folder(staging),
        library_versions=library_versions(),
        valid=True,
    )


def files_not_ours(target: Path) -> tuple[str, ...]:
    """The files in `target` that its artifact did not write (kept when it is replaced).

    A missing or empty folder is fine; a folder that is not an artifact is refused, so an
    export never deletes files it did not write."""
    if not target.exists():
        return ()
    if not target.is_dir():
        raise ConfigError(f"export output {target} is a file; give a folder")
    if not any(target.iterdir()):
        return ()
    manifest_path = target / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ConfigError(
            f"export output {target} is not empty and holds no ducho-fast artifact (no "
            f"{MANIFEST_NAME}); give a new or empty folder (an export never deletes files it "
            "did not write)"
        )
    try:
        listed = set(Manifest.model_validate_json(manifest_path.read_text()).files)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"export output {target}: {MANIFEST_NAME} is not a ducho-fast manifest ({exc}); "
            "give a new or empty folder"
        ) from None
    ours = listed | set(NOT_HASHED)
    return tuple(
        name
        for path in sorted(target.rglob("*"))
        if (path.is_file() or path.is_symlink())
        and (name := str(path.relative_to(target))) not in ours
    )


def replace_folder(staging: Path, target: Path, kept: Sequence[str] = ()) -> None:
    """Swap the finished staging folder into place. An older artifact's own files are removed
    after; files in it that it did not write (`kept`) move into the new artifact's folder."""
    clashes = [name for name in kept if (staging / name).exists()]
    if clashes:
        raise ConfigError(
            f"{target} holds {clashes}, which are not part of its artifact and which the new "
            "artifact would overwrite; move them away and export again"
        )
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{socket.gethostname()}-{os.getpid()}-")
        os.replace(target, old)
    staging.rename(target)
    if old is not None:
        for name in kept:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(old / name, target / name)
        remove_artifact(old)


def remove_artifact(folder: Path) -> None:
    """Delete an old artifact's files (those its manifest lists, and the manifest), then its
    folders once empty; anything else found there stays."""
    manifest_path = folder / MANIFEST_NAME
    try:
        listed = list(Manifest.model_validate_json(manifest_path.read_text()).files)
    except (OSError, ValueError):
        listed = []
    for name in [*listed, *NOT_HASHED]:
        (folder / name).unlink(missing_ok=True)
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.rmdir()  # only empty folders
    with contextlib.suppress(OSError):
        folder.rmdir()
