"""ducho-fast: fast, validated multimodal feature extraction (Ducho-compatible).

Three plain functions, each importing what it needs only when called:
`export(ExportConfig)` -> artifact folder, `extract(config path | SingleModelJob, RunOptions)`
-> pass results, `load(artifact folder)` -> Encoder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from pathlib import Path

    from ducho_fast.api import RunOptions, SingleModelJob
    from ducho_fast.encoder import Encoder
    from ducho_fast.exporter.api import ExportConfig
    from ducho_fast.runner import PassResult
    from ducho_fast.runtime.table import RuntimeChoice

__all__ = [
    "ExportConfig",
    "ModelRef",
    "RunOptions",
    "RuntimeChoice",
    "Sample",
    "SingleModelJob",
    "export",
    "extract",
    "load",
]


def export(config: ExportConfig) -> Path:
    """Export a model to a validated artifact folder and return its path."""
    from ducho_fast.api import export as export_artifact

    return export_artifact(config)


def extract(
    source: str | Path | SingleModelJob, options: RunOptions | None = None, overrides=()
) -> list[PassResult]:
    """Run a Ducho YAML config (a path, str or Path) or a `SingleModelJob`; see
    `ducho_fast.api.extract`."""
    from ducho_fast.api import RunOptions
    from ducho_fast.api import extract as run

    return run(source, options or RunOptions(), overrides)


def load(artifact_dir: str | Path, choice: RuntimeChoice | None = None) -> Encoder:
    """Open an exported artifact as an encoder with `encode_images` / `encode_texts`; a model
    folder, hub id or torchvision name is exported first, as `extract` does."""
    from ducho_fast.api import load as open_encoder

    return open_encoder(artifact_dir, choice)


_LAZY = {
    "ExportConfig": "ducho_fast.exporter.api",
    "ModelRef": "ducho_fast.models.spec",
    "Sample": "ducho_fast.modalities.base",
    "RuntimeChoice": "ducho_fast.runtime.table",
    "RunOptions": "ducho_fast.api",
    "SingleModelJob": "ducho_fast.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(name)
