"""A model name and a runtime choice -> an open session, with the preprocessing that feeds it.

The runtime table says whether a runtime runs the eager tower or an exported artifact; for the
latter the artifact is the source itself, or an export made on the fly and cached by
fingerprint. Preprocessing always comes from the model (eager) or the artifact's manifest, and
the modality table turns it into the model's feed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ducho_fast.artifact.manifest import MANIFEST_NAME, GraphInfo, Manifest, read_manifest
from ducho_fast.core.cache import Remembered
from ducho_fast.core.errors import ConfigError, DuchoFastError, RuntimeUnavailableError
from ducho_fast.core.fidelity import worst_cosine
from ducho_fast.core.machine import installed_versions, machine_key
from ducho_fast.exporter.quantize import CALIBRATED_MODES, QDQ_GRAPHS
from ducho_fast.modalities import Feed, Modality, Sample, modality
from ducho_fast.models.spec import ModelRef, Tower
from ducho_fast.runtime.base import Session
from ducho_fast.runtime.table import RUNTIMES, ArtifactGraph, EagerTower, RuntimeChoice

RUNTIME_GATES_FILE = "runtime-gates.json"
REDUCED_MIN_COSINE = 0.99  # the gate of every reduced precision (bf16, runtime-made int8)
NO_SAMPLE = Sample()


@dataclass(frozen=True, eq=False)
class OpenModel:
    """A session plus what feeds it (the modality and its feed) and a fingerprint."""

    session: Session
    modality: Modality
    feed: Feed
    fingerprint: dict[str, Any]
    output_names: tuple[str, ...]
    item_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # Ducho's layout

    @property
    def sequence(self) -> bool:
        """Each item's outputs are `(T, D)` frame sequences (audio `pooling: none`), as the
        preprocessing spec (the model's, or the artifact manifest's) says."""
        return bool(getattr(self.feed.prepare, "sequence", False))


def open_model(
    ref: ModelRef, kind: str, choice: RuntimeChoice, index: int = 0, sample: Sample = NO_SAMPLE
) -> OpenModel:
    """`kind`: the modality of the tower to open; `index`: the model's place in its pass
    (models of one pass whose feeds agree share preprocessing). `sample`: the user's items,
    for validating (and calibrating static int8 in) an export made on the fly."""
    if not choice.spec.needs_artifact:
        return open_eager(ref, kind, choice, index)
    opened = open_artifact(artifact_for(ref, choice, sample, kind), kind, choice, index, sample)
    return check_pooling(ref, opened)


def check_pooling(ref: ModelRef, opened: OpenModel) -> OpenModel:
    """An artifact given as the model must give what the config asks: frame sequences for
    `pooling: none`, one pooled row otherwise (its graph decides, not the config)."""
    if opened.sequence != (ref.pooling == "none"):
        has = "(1, T, D) frame sequences" if opened.sequence else "pooled (1, D) rows"
        raise ConfigError(
            f"{ref.source} is an artifact exported for {has}, and pooling "
            f"{ref.pooling} was asked: set pooling to match, or give the model itself"
        )
    return opened


def eager_tower(tower: Tower) -> EagerTower:
    return EagerTower(tower.module, modality(tower.name).input_names, tower.output_names)


def open_eager(ref: ModelRef, kind: str, choice: RuntimeChoice, index: int = 0) -> OpenModel:
    from ducho_fast.models.registry import load_model

    loaded = load_model(ref)
    tower = loaded.tower(kind)
    session = choice.spec.open(eager_tower(tower), choice)
    if choice.precision == "bf16":
        check_bf16(tower, session)
    fingerprint = {
        "model": loaded.fingerprint,
        "runtime": choice.runtime,
        "precision": choice.precision,
        "layers": list(tower.output_names),
        "modality": kind,
        "preprocess": tower.preprocess.to_dict() if tower.preprocess is not None else None,
    }
    from ducho_fast.models.towers import item_shapes

    shapes = item_shapes(tower)
    if shapes:  # only then: fingerprints of flat outputs stay as they were
        fingerprint["item_shapes"] = {name: list(shape) for name, shape in shapes.items()}
    kind_of = modality(kind)
    feed = kind_of.eager_feed(tower, kind_of.feed_key(tower.preprocess, index))
    session = kind_of.wrap_session(session, feed)
    return OpenModel(session, kind_of, feed, fingerprint, tower.output_names, shapes)


def check_bf16(tower: Tower, session: Session) -> None:
    """bf16 must be native here (else it is slow emulation) and keep cosine >= 0.99 against
    fp32 on the export validation inputs; otherwise say so (keep fp32)."""
    import torch

    from ducho_fast.exporter.validate import validation_cases
    from ducho_fast.runtime.table import open_torch

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise RuntimeUnavailableError("this CPU has no native bf16 instructions; use fp32")
    reference = open_torch(eager_tower(tower), RuntimeChoice("torch", "fp32"))
    cases = validation_cases(tower)
    small = [(c, x) for c, x in cases if c.split(",")[0] in ("batch=1", "batch=3")]
    # The export's cases at batch 1 and 3: seconds, not minutes.
    fidelity_gate("bf16", small, reference, session, REDUCED_MIN_COSINE, "fp32")


def describe_model(
    ref: ModelRef, kind: str, choice: RuntimeChoice, index: int = 0, sample: Sample = NO_SAMPLE
) -> OpenModel:
    """The model as a driver that runs no batch needs it (fingerprint, feed, outputs), from
    the artifact's manifest, with no session: under the ray and gpus engines the workers open
    the model, and a session here would hold the first GPU for nothing. Eager runtimes (on
    the CPU) are opened: their outputs come from the model."""
    if not choice.spec.needs_artifact:
        return open_eager(ref, kind, choice, index)
    folder = artifact_for(ref, choice, sample, kind)
    manifest = checked_manifest(folder, choice)
    graph = manifest.graph(kind)
    feed = artifact_feed(folder, manifest, graph, index)
    return check_pooling(ref, artifact_model(None, kind, manifest, graph, feed, choice))


def checked_manifest(folder: Path, choice: RuntimeChoice) -> Manifest:
    manifest = read_manifest(folder)
    wanted = choice.spec.artifact_precision(choice.precision)
    if manifest.precision != wanted:
        raise ConfigError(
            f"artifact {folder} is {manifest.precision}, but {choice.runtime} "
            f"{choice.precision} runs a {wanted} artifact"
        )
    return manifest


def open_artifact(
    folder: Path, kind: str, choice: RuntimeChoice, index: int = 0, sample: Sample = NO_SAMPLE
) -> OpenModel:
    manifest = checked_manifest(folder, choice)
    graph = manifest.graph(kind)
    target = ArtifactGraph(folder, manifest, kind)
    session = choice.spec.open(target, choice)
    feed = artifact_feed(folder, manifest, graph, index)
    if choice.precision in choice.spec.gated:
        check_graph(choice, graph, target)
        cases = modality(kind).artifact_cases(feed, sample)
        gate_runtime(choice, target, graph, cases, session)
    return artifact_model(session, kind, manifest, graph, feed, choice)


def artifact_model(
    session: Session | None,
    kind: str,
    manifest: Manifest,
    graph: GraphInfo,
    feed: Feed,
    choice: RuntimeChoice,
) -> OpenModel:
    """An artifact's graph as an OpenModel (no session: described only, see describe_model)."""
    fingerprint = artifact_fingerprint(manifest, graph, choice)
    outputs = tuple(o.name for o in graph.outputs)
    shapes = {name: tuple(shape) for name, shape in (graph.item_shapes or {}).items()}
    wrapped = None if session is None else modality(kind).wrap_session(session, feed)
    return OpenModel(wrapped, modality(kind), feed, fingerprint, outputs, shapes)  # type: ignore[arg-type]


def reference_choice(graph: GraphInfo, choice: RuntimeChoice) -> RuntimeChoice:
    return RuntimeChoice("onnxruntime", graph.precision, choice.threads, choice.cache_dir)


def check_graph(choice: RuntimeChoice, graph: GraphInfo, target: ArtifactGraph) -> None:
    """An artifact given by path must be the kind of graph this runtime needs."""
    wanted = choice.spec.export_settings(choice.precision).get("int8_mode")
    if wanted in CALIBRATED_MODES and graph.quantization not in QDQ_GRAPHS:
        raise ConfigError(
            f"{choice.runtime} int8 runs calibrated (QDQ) int8 graphs; {target.folder} holds "
            f"{graph.quantization}: export with --int8-mode {wanted} and --sample-images/texts"
        )


def gate_runtime(
    choice: RuntimeChoice,
    target: ArtifactGraph,
    graph: GraphInfo,
    cases: list[tuple[str, dict]],
    session: Session,
) -> None:
    """A runtime's gated precision (OpenVINO bf16/int8) against ONNX Runtime on the same graph.
    A pass is remembered by graph, inputs, runtime versions, floor and CPU (same arithmetic on
    the same inputs, same figures), so a rerun skips the reference session and the cases
    (1.6 s of a CLIP image command)."""
    memory = Remembered(choice.cache / RUNTIME_GATES_FILE)
    key = runtime_gate_key(choice, target, graph, cases)
    if memory.entry(key) is not None:
        return
    reference = RUNTIMES.lookup("onnxruntime").open(target, reference_choice(graph, choice))
    what = f"{choice.runtime} {choice.precision}"
    worst = fidelity_gate(what, cases, reference, session, REDUCED_MIN_COSINE, "ONNX Runtime")
    memory.remember(key, {"gated": what, "graph": graph.file, "min_cosine": worst})


def runtime_gate_key(
    choice: RuntimeChoice, target: ArtifactGraph, graph: GraphInfo, cases: list[tuple[str, dict]]
) -> str:
    inputs = hashlib.sha256()
    for case, arrays in cases:
        inputs.update(case.encode())
        for name in sorted(arrays):
            array = np.ascontiguousarray(arrays[name])
            inputs.update(f"{name}{array.dtype}{array.shape}".encode())
            inputs.update(array.data)
    parts = {
        "graph_sha256": target.manifest.files[graph.file],
        "runtime": choice.runtime,
        "precision": choice.precision,
        "floor": REDUCED_MIN_COSINE,
        "inputs": inputs.hexdigest(),
        "libraries": installed_versions(["onnxruntime", choice.spec.requires or choice.runtime]),
        "machine": machine_key(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def fidelity_gate(
    what: str,
    cases: list[tuple[str, dict]],
    reference: Session,
    session: Session,
    floor: float,
    against: str,
) -> float:
    """`session` keeps every output's minimum row cosine to `reference` at `floor` or more on
    every case (bf16 against fp32; a runtime's gated precision against ONNX Runtime on the
    same artifact graph, which the export validated); otherwise nothing runs, and the
    message gives the numbers. Returns the smallest cosine seen."""
    smallest = 1.0
    for case, inputs in cases:
        expected, got = reference.run(inputs), session.run(inputs)
        for name, array in expected.items():
            worst = worst_cosine(array, got[name])
            if not worst >= floor:  # NaN (a non-finite output) fails too
                raise DuchoFastError(
                    f"{what} fails its fidelity gate ({case}, {name}: min cosine {worst:.6f} "
                    f"< {floor} against {against}); keep fp32 for this model"
                )
            smallest = min(smallest, worst)
    return smallest


def artifact_feed(folder: Path, manifest: Manifest, graph: GraphInfo, index: int) -> Feed:
    kind = modality(graph.name)
    spec = graph_spec(graph)
    return kind.artifact_feed(folder, manifest.tokenizer_dir, spec, kind.feed_key(spec, index))


def graph_spec(graph: GraphInfo) -> Any:
    """The graph's preprocessing as its modality's spec object."""
    if graph.preprocess is None:
        raise ConfigError(f"graph {graph.name} records no preprocessing; export it again")
    return modality(graph.name).spec_from_dict(graph.preprocess)


def artifact_fingerprint(manifest: Manifest, graph: GraphInfo, choice: RuntimeChoice) -> dict:
    return {
        "model": manifest.fingerprint,
        "runtime": choice.runtime,
        "ort_provider": choice.ort_provider if choice.runtime == "onnxruntime" else None,
        "precision": choice.precision,  # the artifact's, or one the runtime reduces it to
        "quantization": graph.quantization,
        "graph_sha256": manifest.files[graph.file],
        "layers": [o.name for o in graph.outputs],
        "modality": graph.name,
        "preprocess": graph.preprocess,
        **({"item_shapes": graph.item_shapes} if graph.item_shapes else {}),
    }


def sweep_identity(fingerprint: dict) -> dict:
    """What a model's best batch size depends on, from its fingerprint (see batch_sweep)."""
    keys = ("model", "graph_sha256", "runtime", "ort_provider", "precision")
    return {key: fingerprint.get(key) for key in keys}


def peek_artifact(
    ref: ModelRef, choice: RuntimeChoice, kind: str
) -> tuple[Manifest, GraphInfo] | None:
    """An artifact that exists already (given or cached) and its `kind` graph, read without
    checking hashes or opening a session, so work can start while the model loads; else None."""
    if not choice.spec.needs_artifact:
        return None
    folder = artifact_folder(ref, choice, kind)
    if not (folder / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = read_manifest(folder, verify_hashes=False)
        return manifest, manifest.graph(kind)
    except (DuchoFastError, KeyError):
        return None  # opening the model reports it properly


def peek_feed(ref: ModelRef, choice: RuntimeChoice, kind: str, index: int) -> Feed | None:
    """The feed of an artifact that already exists, without checking hashes or opening a
    session (opening the model later checks everything)."""
    found = peek_artifact(ref, choice, kind)
    if found is None or found[1].preprocess is None:
        return None
    try:
        return artifact_feed(artifact_folder(ref, choice, kind), *found, index)
    except DuchoFastError:
        return None


def peek_sweep_identity(ref: ModelRef, choice: RuntimeChoice, kind: str) -> dict | None:
    found = peek_artifact(ref, choice, kind)
    return sweep_identity(artifact_fingerprint(*found, choice)) if found else None


def check_model(ref: ModelRef, kind: str, choice: RuntimeChoice) -> None:
    """Cheap checks that `ref` opens as a `kind` tower under `choice`, before any work: an
    artifact has that graph at the precision the runtime runs; a model to export exists and has
    its layers (see `models.registry.check_source`). Loads no weights, imports no torch when
    the artifact exists already."""
    if is_artifact(ref.source):
        manifest = read_manifest(Path(ref.source), verify_hashes=False)
        pooling = (manifest.graph(kind).preprocess or {}).get("pooling", "mean")
        if pooling != ref.pooling:
            raise ConfigError(
                f"artifact {ref.source} was exported with pooling {pooling}, and pooling "
                f"{ref.pooling} was asked: set pooling to match, or give the model itself"
            )
        wanted = choice.spec.artifact_precision(choice.precision)
        if choice.spec.needs_artifact and manifest.precision != wanted:
            raise ConfigError(
                f"artifact {ref.source} is {manifest.precision}, but {choice.runtime} "
                f"{choice.precision} runs a {wanted} artifact"
            )
        return
    if peek_artifact(ref, choice, kind) is not None:
        return  # exported and cached already
    from ducho_fast.models.registry import check_source

    check_source(ref)


def is_artifact(source: str) -> bool:
    return (Path(source) / MANIFEST_NAME).is_file()


def artifact_folder(ref: ModelRef, choice: RuntimeChoice, kind: str | None = None) -> Path:
    """Where the artifact for `ref` (run as `kind`) is: the source itself, or its place in the
    export cache."""
    if is_artifact(ref.source):
        return Path(ref.source)
    precision = choice.spec.artifact_precision(choice.precision)
    options = dict(choice.spec.export_settings(choice.precision))
    towers = export_towers(options, kind)
    if towers:
        options["towers"] = ",".join(towers)
    return choice.cache / "artifacts" / cache_key(ref, precision, options)


def export_towers(options: Mapping[str, str], kind: str | None) -> tuple[str, ...]:
    """The towers an on-the-fly export holds; () for all. Calibrated int8 is fitted on the
    run's own items, all of one modality, so its export holds the run's tower alone: a dual
    encoder's other tower has nothing to calibrate on, and gets its own export when a run of
    its modality needs it."""
    return (kind,) if kind and options.get("int8_mode") in CALIBRATED_MODES else ()


def artifact_for(
    ref: ModelRef, choice: RuntimeChoice, sample: Sample = NO_SAMPLE, kind: str | None = None
) -> Path:
    """The artifact to run: the source itself, or a cached export keyed by fingerprint."""
    if is_artifact(ref.source):
        return Path(ref.source)  # opening it checks its precision (open_artifact)
    folder = artifact_folder(ref, choice, kind)
    if (folder / MANIFEST_NAME).is_file():
        return folder
    from ducho_fast.exporter.api import ExportConfig, export  # imports torch: only when exporting

    precision = choice.spec.artifact_precision(choice.precision)
    options = choice.spec.export_settings(choice.precision)
    mode = options.get("int8_mode")
    if mode in CALIBRATED_MODES and not sample:
        raise ConfigError(
            f"{choice.runtime} int8 calibrates int8 on your items, and none were given: "
            f"export it with --int8-mode {mode} --sample-images/--sample-texts, or extract"
        )
    towers = export_towers(options, kind)
    config = ExportConfig(
        replace(ref, task="auto"), folder, precision, sample=sample, towers=towers, **options
    )  # type: ignore[arg-type]
    return export(config)


def cache_key(ref: ModelRef, precision: str, options: Mapping[str, str] | None = None) -> str:
    """Cheap key from the reference, its files' sizes and times, and the export options."""
    parts: dict[str, Any] = {
        "source": ref.source,
        "layers": list(ref.layers),
        "weights": ref.weights,
        "image_size": list(ref.image_size),
        "mean": list(ref.mean),
        "std": list(ref.std),
        "precision": precision,
        "family": ref.family,
        "normalization": ref.normalization,
    }
    if options:  # export settings a runtime asks for (absent otherwise: keys stay as they were)
        parts["export_options"] = dict(options)
    if ref.l2_normalize:
        parts["l2_normalize"] = True
    if ref.pooling != "mean":  # only then: keys of pooled exports stay as they were
        parts["pooling"] = ref.pooling
    path = Path(ref.source)
    if path.exists():  # a local model: the same key however the path is spelled
        path = path.resolve()
        parts["source"] = str(path)
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        parts["files"] = [
            [relative(f, path), f.stat().st_size, f.stat().st_mtime_ns] for f in files
        ]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return f"{path.name or 'model'}-{precision}-{digest}"


def relative(file: Path, root: Path) -> str:
    return file.name if file == root else str(file.relative_to(root))
