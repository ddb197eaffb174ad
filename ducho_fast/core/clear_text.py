"""Ducho's `clear_text: true` cleaning, rule for rule, so cleaned texts (and features) match.

Ducho's rules come from a review-graph tokenizer: keep ASCII letters, digits and a few
punctuation marks, space out punctuation and contractions, spell single digits. Its last step
(`strip().lower()`) discards its result, so Ducho neither lowercases nor strips; we do the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable

Rule = tuple[str, str | Callable[[re.Match], str]]

PUNCTUATION: tuple[Rule, ...] = (
    (r"[^A-Za-z0-9',.!;?()]", " "),
    (r"\.", " . "),
    (r"!+", " ! "),
    (r",", " , "),
    (r";", " ; "),
    (r"\\", r" \\ "),
    (r"!", " ! "),
    (r"\(", " ( "),
    (r"\)", " ) "),
    (r"\?", " ? "),
    (r"\s{2,}", " "),
    (r"(\.|\s){7,}", " ... "),
    (r"(?<= )(\w \. )+(\w \.)", lambda match: match.group().replace(" ", "")),
)
CONTRACTIONS: tuple[Rule, ...] = tuple(
    (rf"{suffix}", f" {suffix}") for suffix in ("'s", "'ve", "n't", "'re", "'d", "'m", "'ll")
)
# An apostrophe that does not start one of the contractions above becomes a space.
STRAY_APOSTROPHE = (
    r"(?!(('(?=s\b))|('(?=ve\b))|('(?=re\b))|('(?=d\b))|('(?=ll\b))|('(?=m\b))"
    r"|((?<=n\b)'(?=t\b))))'"
)
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RULES: tuple[tuple[re.Pattern, str | Callable[[re.Match], str]], ...] = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        *PUNCTUATION,
        *CONTRACTIONS,
        (STRAY_APOSTROPHE, " "),
        *((f" {digit} ", f" {word} ") for digit, word in enumerate(DIGITS)),
        (r"\s{2,}", " "),
    )
)


def clear_text(text: str) -> str:
    for pattern, replacement in RULES:
        text = pattern.sub(replacement, text)
    return text
