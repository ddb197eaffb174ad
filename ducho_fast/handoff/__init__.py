"""From extraction outputs to what a recommender framework loads (`ducho-fast handoff`).

One module per framework behind the format table (`formats.FORMATS`)."""

from ducho_fast.handoff.cornac import CornacFormat
from ducho_fast.handoff.elliot import ElliotFormat
from ducho_fast.handoff.formats import FORMATS, HandoffFormat, get_format, register_format
from ducho_fast.handoff.mmrec import MMRecFormat
from ducho_fast.handoff.run import FeatureSource, HandoffOptions, HandoffReport, handoff

register_format(MMRecFormat())
register_format(ElliotFormat())
register_format(CornacFormat())

__all__ = [
    "FORMATS",
    "FeatureSource",
    "HandoffFormat",
    "HandoffOptions",
    "HandoffReport",
    "get_format",
    "handoff",
    "register_format",
]
