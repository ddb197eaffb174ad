"""Explicit registry of model families: how a reference is recognised and loaded.

Families register with `@register_family`; a duplicate name fails at import, an unknown one
fails with the list of known names. Detection runs in registration order.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ducho_fast.core.errors import ModelLoadError
from ducho_fast.models.spec import LoadedModel, ModelRef

Detector = Callable[[ModelRef, Path | None], bool]
Loader = Callable[[ModelRef, Path | None], LoadedModel]
Checker = Callable[[ModelRef, Path | None], None]


@dataclass(frozen=True)
class Family:
    name: str
    detect: Detector
    load: Loader
    description: str
    # What the family can tell about a local model without loading weights (raises
    # ModelLoadError): run by `check_source` before any work.
    check: Checker | None = None


FAMILIES: dict[str, Family] = {}


def register_family(
    name: str, detect: Detector, description: str, check: Checker | None = None
) -> Callable[[Loader], Loader]:
    def decorator(load: Loader) -> Loader:
        if name in FAMILIES:
            raise ValueError(f"model family {name!r} is registered twice")
        FAMILIES[name] = Family(name, detect, load, description, check)
        return load

    return decorator


def get_family(name: str) -> Family:
    _import_families()
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelLoadError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}") from None


def resolve_local_path(ref: ModelRef) -> Path | None:
    """A local file or folder if the source is one, else None (a hub id or a library name)."""
    path = Path(ref.source).expanduser()
    return path if path.exists() else None


def load_model(ref: ModelRef) -> LoadedModel:
    """Resolve `ref` to a family and load it on the CPU in eval mode."""
    _import_families()
    path = resolve_local_path(ref)
    if path is None and _looks_like_hub_id(ref.source):
        path = download_snapshot(ref.source)
    if ref.family != "auto":
        return checked_pooling(ref, eval_mode(get_family(ref.family).load(ref, path)))
    for family in FAMILIES.values():
        if family.detect(ref, path):
            return checked_pooling(ref, eval_mode(family.load(ref, path)))
    raise ModelLoadError(
        f"cannot tell what kind of model {ref.source!r} is. Give a transformers or "
        "sentence-transformers folder or hub id, a torchvision architecture name (e.g. resnet50), "
        f"or a pickled torch module with --trust-pickle. Known families: {sorted(FAMILIES)}"
    )


def checked_pooling(ref: ModelRef, loaded: LoadedModel) -> LoadedModel:
    """`pooling: none` from a family that gives no frame sequences is refused, never ignored."""
    if ref.pooling == "none" and not any(tower.sequence for tower in loaded.towers):
        raise ModelLoadError(
            f"{ref.source}: pooling none (frame sequences) applies to the wav2vec2 family of "
            f"audio encoders; this is a {loaded.family} model"
        )
    return loaded


def check_source(ref: ModelRef) -> None:
    """What can be told about `ref` without loading weights, so a bad model in a config's last
    block fails before the first block works: a local path exists and is a kind of model we
    know (a pickle only with trust_pickle), a torchvision name exists and has the layers asked
    for, anything else looks like a hub id. Raises ModelLoadError saying what to do."""
    _import_families()
    from ducho_fast.models import torchvision_models as tv

    path = resolve_local_path(ref)
    if path is not None:
        if tv._is_pickle(ref, path):
            if not ref.trust_pickle:
                raise tv.untrusted_pickle(path)
            if ref.layers:
                tv.check_layers(tv.unpickle_module(path), ref.layers)
            return
        wanted = [FAMILIES[ref.family]] if ref.family != "auto" else list(FAMILIES.values())
        found = next((family for family in wanted if family.detect(ref, path)), None)
        if found is None:
            raise ModelLoadError(
                f"{ref.source} is neither a transformers / sentence-transformers folder, an "
                "exported artifact, nor a pickled torch module (.pt, .pth, .pkl)"
            )
        if found.check is not None:
            found.check(ref, path)
        return
    if tv.torchvision_name(ref.source) is not None:
        tv.check_torchvision_layers(ref.source, ref.layers)
        return
    if looks_like_path(ref.source):
        raise ModelLoadError(
            f"{ref.source} does not exist (relative paths are read from the current folder, "
            f"{Path.cwd()}, as Ducho reads them)"
        )
    if not _looks_like_hub_id(ref.source):
        close = difflib.get_close_matches(ref.source.lower(), tv.torchvision_names(), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ModelLoadError(
            f"{ref.source!r} is not a torchvision architecture, a local file or folder, or a "
            f"hub id (owner/name){hint}"
        )
    check_hub_offline(ref.source)


def check_hub_offline(repo_id: str) -> None:
    """Offline (HF_HUB_OFFLINE), a hub id must be in the local cache: say so now, not when
    its block starts. Online, opening the model downloads it."""
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE and try_to_load_from_cache(repo_id, "config.json") is None:
        raise ModelLoadError(
            f"{repo_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
            "download it first, or give a local folder saved with save_pretrained"
        )


def looks_like_path(source: str) -> bool:
    from ducho_fast.models.torchvision_models import PICKLE_SUFFIXES

    return source.startswith((".", "/", "~")) or Path(source).suffix in PICKLE_SUFFIXES


def eval_mode(loaded: LoadedModel) -> LoadedModel:
    for tower in loaded.towers:
        tower.module.eval()
    return loaded


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def download_snapshot(repo_id: str) -> Path:
    """Fetch a hub repository (weights, configs, tokenizer) into the local HF cache."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as exc:  # offline, unknown id, gated: all end the same way for the user
        raise ModelLoadError(
            f"could not fetch {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: {exc}). "
            "Offline, pass a local folder saved with save_pretrained instead."
        ) from exc


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".pkl", ".onnx", ".msgpack")


def fingerprint_path(path: Path) -> str:
    """sha256 over the weight files (name and content), so a changed checkpoint changes it."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file.suffix not in WEIGHT_SUFFIXES and file.name not in ("config.json",):
            continue
        digest.update(str(file.relative_to(path if path.is_dir() else path.parent)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _import_families() -> None:
    """Import the modules whose decorators fill the registry (explicit, no star imports)."""
    from ducho_fast.models import hf, hf_audio, torchvision_models  # noqa: F401
