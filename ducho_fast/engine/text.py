"""Text cleaning for `clear_text: true` (Ducho's option): markup, URLs and stray symbols out."""

from __future__ import annotations

import html
import re

TAGS = re.compile(r"<[^>]+>")
URLS = re.compile(r"https?://\S+|www\.\S+")
SYMBOLS = re.compile(r"[^\w\s.,;:!?'\"()\-]")
SPACES = re.compile(r"\s+")


def clear_text(text: str) -> str:
    """Unescape HTML entities, drop tags, URLs and symbols, collapse white space."""
    text = html.unescape(text)
    text = TAGS.sub(" ", text)
    text = URLS.sub(" ", text)
    text = SYMBOLS.sub(" ", text)
    return SPACES.sub(" ", text).strip()
