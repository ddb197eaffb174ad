"""The modality table: each registered modality is one module (see `base.Modality`)."""

from ducho_fast.modalities.audio import AudioModality
from ducho_fast.modalities.base import MODALITIES, Feed, Modality, Sample, modality, register
from ducho_fast.modalities.image import ImageModality
from ducho_fast.modalities.text import TextModality

register(ImageModality())
register(TextModality())
register(AudioModality())

__all__ = ["MODALITIES", "Feed", "Modality", "Sample", "modality", "register"]
