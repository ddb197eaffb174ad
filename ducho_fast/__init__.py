"""ducho-fast: fast, validated multimodal feature extraction (Ducho-compatible)."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ducho_fast.encoder import Encoder
    from ducho_fast.export.api import ExportConfig

__all__ = ["ExportConfig", "ModelRef", "Sample", "export", "load"]

from ducho_fast import export


def load(artifact_dir, choice=None) -> Encoder:
    """Open an exported artifact as an encoder with `encode_images` / `encode_texts`."""
    from ducho_fast.encoder import load as _load

    return _load(artifact_dir, choice)


def __getattr__(name: str):
    if name in ("ExportConfig", "Sample"):
        from ducho_fast.export import api

        return getattr(api, name)
    if name == "ModelRef":
        from ducho_fast.models.spec import ModelRef

        return ModelRef
    raise AttributeError(name)
