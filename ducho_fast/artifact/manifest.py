"""The artifact manifest: everything the runtime needs, so it never guesses.

Validated on read (pydantic, frozen): a manifest from a newer schema, one edited after export
(its own content hash, `manifest_sha256`, no longer matches), a graph whose file hash changed,
or an export that never passed validation is refused with the reason.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ducho_fast.core.errors import ArtifactError
from ducho_fast.core.io import atomic_json, sha256_file

SCHEMA_VERSION = 3  # 2: one `preprocess` per graph, whatever its modality; 3: manifest_sha256
MANIFEST_NAME = "manifest.json"
# Sizes, mtimes and inodes of files whose hashes were last checked, so reopening an unchanged
# artifact skips re-hashing hundreds of MB (the quick check make and rsync use).
VERIFIED_STAMP = ".verified.json"
NOT_HASHED = (MANIFEST_NAME, VERIFIED_STAMP)
RACY_NS = 2_000_000_000


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorInfo(Frozen):
    name: str
    dtype: str
    shape: list[int | str]


class GraphInfo(Frozen):
    name: str
    file: str
    precision: str
    quantization: str | None = None
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    preprocess: dict[str, Any] | None = None  # the modality's spec (see modalities/)
    validation: dict[str, Any]
    # Outputs that are more than a vector per item: Ducho's per-item shape (the graph flattens)
    item_shapes: dict[str, list[int]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_schema_1(cls, data: Any) -> Any:
        """Schema 1 kept the spec under `image_preprocess` or `text_preprocess`."""
        if isinstance(data, dict) and ("image_preprocess" in data or "text_preprocess" in data):
            data = dict(data)
            legacy = data.pop("image_preprocess", None), data.pop("text_preprocess", None)
            data.setdefault("preprocess", legacy[0] if legacy[0] is not None else legacy[1])
        return data


class Manifest(Frozen):
    schema_version: int
    source: str
    family: str
    fingerprint: str
    task: str
    precision: str
    opset: int
    tokenizer_dir: str | None
    graphs: list[GraphInfo]
    files: dict[str, str]
    library_versions: dict[str, str]
    tensorrt: dict[str, Any] | None = None
    valid: bool
    # The hash of everything above (see content_hash); None only in schemas before 3.
    manifest_sha256: str | None = None

    def graph(self, name: str) -> GraphInfo:
        for graph in self.graphs:
            if graph.name == name:
                return graph
        raise ArtifactError(
            f"this artifact has no {name} graph (it has: {[g.name for g in self.graphs]})"
        )


def hash_folder(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in NOT_HASHED
    }


def tensor_infos(values) -> list[TensorInfo]:
    from onnx import helper

    infos = []
    for value in values:
        tensor_type = value.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        infos.append(TensorInfo(name=value.name, dtype=dtype, shape=shape))
    return infos


def graph_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return tensor_infos(model.graph.input), tensor_infos(model.graph.output)


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = (
        "ducho-fast",
        "torch",
        "torchvision",
        "transformers",
        "sentence-transformers",
        "onnx",
        "onnxruntime",
        "onnxruntime-gpu",
        "tensorrt",
        "numpy",
        "pillow",
    )
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def content_hash(manifest: Manifest) -> str:
    """SHA-256 of the manifest's content without its own hash field (canonical JSON)."""
    data = manifest.model_dump(mode="json", exclude={"manifest_sha256"})
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def seal(manifest: Manifest) -> Manifest:
    """The manifest with its content hash set (as `write_manifest` writes it)."""
    return manifest.model_copy(update={"manifest_sha256": content_hash(manifest)})


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Atomic write: a reader sees the old manifest or the new one, never half of one. The
    manifest carries its own content hash, so an edit (its preprocessing) is refused."""
    path = folder / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(seal(manifest).model_dump(mode="json"), indent=2))
    os.replace(tmp, path)
    return path


def read_manifest(folder: Path, verify_hashes: bool = True) -> Manifest:
    """Read and check an artifact folder; every refusal says why."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{folder} is not a ducho-fast artifact (no {MANIFEST_NAME})")
    try:
        manifest = Manifest.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise ArtifactError(f"{path} is not a valid manifest: {exc}") from exc
    if manifest.schema_version > SCHEMA_VERSION:
        raise ArtifactError(
            f"{path} has schema {manifest.schema_version}; this ducho-fast reads up to "
            f"{SCHEMA_VERSION}. Upgrade ducho-fast."
        )
    if not manifest.valid:
        raise ArtifactError(f"{folder} did not pass validation; it cannot be used")
    check_content(path, manifest)
    if verify_hashes:
        verify_files(Path(folder), manifest)
    return manifest


def check_content(path: Path, manifest: Manifest) -> None:
    """The manifest says how inputs are preprocessed: an edited one would be used silently."""
    if manifest.manifest_sha256 is None and manifest.schema_version < 3:
        return  # written before manifests carried their hash: export again to get the check
    if manifest.manifest_sha256 != content_hash(manifest):
        raise ArtifactError(
            f"{path} was edited after export (its content no longer matches its "
            "manifest_sha256): restore it or export again (a cached export: delete its folder)"
        )


def verify_files(folder: Path, manifest: Manifest) -> None:
    """Check every listed file's hash, unless none changed since the last check passed."""
    for name in manifest.files:
        if not (folder / name).is_file():
            raise ArtifactError(f"{folder}: {name} is listed in the manifest but missing")
    stamp = files_stamp(folder, manifest)
    if read_stamp(folder) == stamp:
        return
    for name, expected in manifest.files.items():
        if sha256_file(folder / name) != expected:
            raise ArtifactError(
                f"{folder}: {name} does not match the hash in the manifest (modified or "
                "corrupted after export); export again"
            )
    write_stamp(folder, stamp)


def files_stamp(folder: Path, manifest: Manifest) -> dict[str, list]:
    def stat(path: Path) -> list:
        info = path.stat()
        return [info.st_size, info.st_mtime_ns, info.st_ino]

    stamp = {name: [*stat(folder / name), sha] for name, sha in manifest.files.items()}
    stamp[MANIFEST_NAME] = [*stat(folder / MANIFEST_NAME), ""]
    return stamp


def read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / VERIFIED_STAMP).read_text())
    except (OSError, ValueError):
        return None


def write_stamp(folder: Path, stamp: dict) -> None:
    """Best effort: a read-only artifact folder is simply re-hashed on every open.

    Files modified in the last seconds are not stamped: the kernel's coarse mtime clock could
    give a later same-size rewrite the same mtime (git's "racy clean" problem).
    """
    newest = max(entry[1] for entry in stamp.values())
    if time.time_ns() - newest < RACY_NS:
        return
    with contextlib.suppress(OSError):
        atomic_json(folder / VERIFIED_STAMP, stamp)
