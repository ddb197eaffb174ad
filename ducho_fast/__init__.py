"""ducho-fast: fast, validated multimodal feature extraction (Ducho-compatible)."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .encoder import Encoder
    from .export.api import ExportConfig

__all__ = ["ExportConfig", "ModelRef", "Sample", "export", "load"]

from . import export


def load(artifact_dir, options=None) -> Encoder:
    """Open an exported artifact as an encoder with `encode_images` / `encode_texts`."""
    from .encoder import load as _load

    return _load(artifact_dir, options)


def __getattr__(name: str):
    if name in ("ExportConfig", "Sample"):
        from .export import api

        return getattr(api, name)
    if name == "ModelRef":
        from .models.spec import ModelRef

        return ModelRef
    raise AttributeError(name)
