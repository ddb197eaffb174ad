"""Open a model for extraction on a chosen runtime, with the preprocessing that belongs to it.

torch / torch-compile run the export wrapper in PyTorch; onnxruntime runs an artifact (given,
or exported on the fly and cached by fingerprint); tensorrt runs an artifact's engines.
Preprocessing always comes from the model (eager) or the artifact's manifest (compiled).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ducho_fast.artifact.manifest import MANIFEST_NAME, GraphInfo, Manifest, read_manifest
from ducho_fast.core.errors import ConfigError, DuchoFastError, RuntimeUnavailableError
from ducho_fast.core.image import ImagePreprocessSpec
from ducho_fast.core.tokenize import LoadedTokenizer, load_tokenizer, wrap_transformers_tokenizer
from ducho_fast.engine.pipeline import TextEncoding
from ducho_fast.models.spec import ModelRef, Sample
from ducho_fast.runtime.base import Session

Runtime = Literal["torch", "torch-compile", "onnxruntime", "tensorrt"]
RUNTIMES = ("torch", "torch-compile", "onnxruntime", "tensorrt")
EAGER_PRECISIONS = ("fp32", "bf16")  # bf16: autocast on CPUs with native bf16 instructions
BF16_MIN_COSINE = 0.99
NO_SAMPLE = Sample()
DEFAULT_CACHE = Path(os.environ.get("DUCHO_FAST_CACHE", "~/.cache/ducho-fast")).expanduser()


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: Runtime = "onnxruntime"
    precision: str = "fp32"
    threads: int = 0
    cache_dir: Path = DEFAULT_CACHE
    ort_provider: str = "cpu"  # onnxruntime only: cpu, cuda or tensorrt (execution providers)


@dataclass(frozen=True, eq=False)
class OpenModel:
    """A session plus what feeds it: image spec or text encoding, and a fingerprint."""

    session: Session
    image: ImagePreprocessSpec | None
    text: TextEncoding | None
    fingerprint: dict[str, Any]
    output_names: tuple[str, ...]


def text_encoding(key: str, loaded: LoadedTokenizer, max_length: int, padding: str) -> TextEncoding:
    pad_to = max_length if padding == "max_length" else None
    return TextEncoding(key, loaded.tokenize, loaded.pad_id, pad_to)


def open_model(
    ref: ModelRef, kind: str, choice: RuntimeChoice, key: str, sample: Sample = NO_SAMPLE
) -> OpenModel:
    """`sample`: the user's items, for validating (and calibrating static int8 in) an export
    made on the fly."""
    if choice.runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {choice.runtime!r}; use one of {list(RUNTIMES)}")
    if choice.runtime in ("torch", "torch-compile"):
        return open_eager(ref, kind, choice, key)
    if choice.precision == "bf16":
        raise ConfigError("bf16 runs on the torch runtimes (--runtime torch or torch-compile)")
    return open_artifact(artifact_for(ref, choice, sample), kind, choice, key)


def open_eager(ref: ModelRef, kind: str, choice: RuntimeChoice, key: str) -> OpenModel:
    from ducho_fast.models.registry import load_model
    from ducho_fast.runtime.torch import TorchSession

    if choice.precision not in EAGER_PRECISIONS:
        raise ConfigError(
            f"runtime {choice.runtime} runs {list(EAGER_PRECISIONS)}; use onnxruntime for "
            f"{choice.precision}"
        )
    loaded = load_model(ref)
    tower = loaded.tower(kind)
    session = TorchSession(
        tower,
        compiled=choice.runtime == "torch-compile",
        threads=choice.threads or None,
        bf16=choice.precision == "bf16",
    )
    if choice.precision == "bf16":
        check_bf16(tower, session)
    text = None
    if tower.text is not None:
        loaded_tokenizer = wrap_transformers_tokenizer(tower.tokenizer, tower.text.max_length)
        text = text_encoding(key, loaded_tokenizer, tower.text.max_length, tower.text.padding)
    fingerprint = {
        "model": loaded.fingerprint,
        "runtime": choice.runtime,
        "precision": choice.precision,
        "layers": list(tower.output_names),
        "image_preprocess": tower.image.to_dict() if tower.image else None,
        "text_preprocess": tower.text.to_dict() if tower.text else None,
    }
    return OpenModel(session, tower.image, text, fingerprint, tower.output_names)


ORT_PROVIDERS = ("cpu", "cuda", "tensorrt")


def ort_options(choice: RuntimeChoice, precision: str) -> Any:
    """Execution providers in priority order, with the CPU last for nodes a GPU EP lacks."""
    from ducho_fast.runtime.onnxruntime import OrtOptions

    if choice.ort_provider not in ORT_PROVIDERS:
        raise ConfigError(f"unknown ort_provider {choice.ort_provider!r}; use {ORT_PROVIDERS}")
    chains = {
        "cpu": (("cpu", {}),),
        "cuda": (("cuda", {}), ("cpu", {})),
        "tensorrt": (
            (
                "tensorrt",
                {
                    "trt_engine_cache_enable": "True",
                    "trt_engine_cache_path": str(choice.cache_dir / "ort-tensorrt"),
                    "trt_fp16_enable": str(precision == "fp16"),
                },
            ),
            ("cuda", {}),
            ("cpu", {}),
        ),
    }
    chain = chains[choice.ort_provider]
    return OrtOptions(
        providers=tuple(name for name, _ in chain),
        provider_options=tuple(options for _, options in chain),
        intra_op_threads=choice.threads,
    )


def check_bf16(tower: Any, session: Session) -> None:
    """bf16 must be native here (else it is slow emulation) and keep cosine >= 0.99 against
    fp32 on the export validation inputs; otherwise say so (keep fp32)."""
    import torch

    from ducho_fast.export.validate import row_cosines, validation_cases
    from ducho_fast.runtime.torch import TorchSession

    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise RuntimeUnavailableError("this CPU has no native bf16 instructions; use fp32")
    reference = TorchSession(tower)
    cases = validation_cases(tower)
    small = [(c, x) for c, x in cases if c.split(",")[0] in ("batch=1", "batch=3")]
    for case, inputs in small:  # the export's cases at batch 1 and 3: seconds, not minutes
        expected, got = reference.run(inputs), session.run(inputs)
        for name, array in expected.items():
            worst = float(row_cosines(array, got[name]).min())
            if worst < BF16_MIN_COSINE:
                raise DuchoFastError(
                    f"bf16 fails its fidelity gate ({case}, {name}: min cosine {worst:.6f} "
                    f"< {BF16_MIN_COSINE} against fp32); keep fp32 for this model"
                )


def open_artifact(folder: Path, kind: str, choice: RuntimeChoice, key: str) -> OpenModel:
    from ducho_fast.runtime.onnxruntime import OrtSession

    manifest = read_manifest(folder)
    graph = manifest.graph(kind)
    if choice.runtime == "tensorrt":
        from ducho_fast.runtime.tensorrt import TensorRTSession

        session: Session = TensorRTSession.from_artifact(
            folder, manifest, kind, cache_dir=choice.cache_dir / "tensorrt"
        )
    else:
        session = OrtSession(folder / graph.file, ort_options(choice, graph.precision))
    image = (
        ImagePreprocessSpec.from_dict(graph.image_preprocess) if graph.image_preprocess else None
    )
    text = None
    if graph.text_preprocess is not None:
        assert manifest.tokenizer_dir is not None
        max_length = int(graph.text_preprocess["max_length"])
        loaded = load_tokenizer(folder / manifest.tokenizer_dir, max_length)
        text = text_encoding(key, loaded, max_length, graph.text_preprocess["padding"])
    fingerprint = artifact_fingerprint(manifest, graph, choice)
    return OpenModel(session, image, text, fingerprint, tuple(o.name for o in graph.outputs))


def artifact_fingerprint(manifest: Manifest, graph: GraphInfo, choice: RuntimeChoice) -> dict:
    return {
        "model": manifest.fingerprint,
        "runtime": choice.runtime,
        "ort_provider": choice.ort_provider if choice.runtime == "onnxruntime" else None,
        "precision": graph.precision,
        "quantization": graph.quantization,
        "graph_sha256": manifest.files[graph.file],
        "layers": [o.name for o in graph.outputs],
        "image_preprocess": graph.image_preprocess,
        "text_preprocess": graph.text_preprocess,
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
    if choice.runtime not in ("onnxruntime", "tensorrt"):
        return None
    folder = artifact_folder(ref, choice)
    if not (folder / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = read_manifest(folder, verify_hashes=False)
        return manifest, manifest.graph(kind)
    except (DuchoFastError, KeyError):
        return None  # opening the model reports it properly


def peek_image_spec(ref: ModelRef, choice: RuntimeChoice) -> ImagePreprocessSpec | None:
    found = peek_artifact(ref, choice, "image")
    if found is None or not found[1].image_preprocess:
        return None
    return ImagePreprocessSpec.from_dict(found[1].image_preprocess)


def peek_sweep_identity(ref: ModelRef, choice: RuntimeChoice, kind: str) -> dict | None:
    found = peek_artifact(ref, choice, kind)
    return sweep_identity(artifact_fingerprint(*found, choice)) if found else None


def is_artifact(source: str) -> bool:
    return (Path(source) / MANIFEST_NAME).is_file()


def artifact_folder(ref: ModelRef, choice: RuntimeChoice) -> Path:
    """Where the artifact for `ref` is: the source itself, or its place in the export cache."""
    if is_artifact(ref.source):
        return Path(ref.source)
    return choice.cache_dir / "artifacts" / cache_key(ref, choice.precision)


def artifact_for(ref: ModelRef, choice: RuntimeChoice, sample: Sample = NO_SAMPLE) -> Path:
    """The artifact to run: the source itself, or a cached export keyed by fingerprint."""
    if is_artifact(ref.source):
        manifest: Manifest = read_manifest(Path(ref.source), verify_hashes=False)
        if manifest.precision != choice.precision:
            raise ConfigError(
                f"artifact {ref.source} is {manifest.precision}, but {choice.precision} was asked"
            )
        return Path(ref.source)
    folder = artifact_folder(ref, choice)
    if (folder / MANIFEST_NAME).is_file():
        return folder
    from ducho_fast.export.api import ExportConfig, export  # imports torch: only when exporting

    config = ExportConfig(replace(ref, task="auto"), folder, choice.precision, sample=sample)  # type: ignore[arg-type]
    return export(config)


def cache_key(ref: ModelRef, precision: str) -> str:
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
    path = Path(ref.source)
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        parts["files"] = [[str(f), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return f"{path.name or 'model'}-{precision}-{digest}"
