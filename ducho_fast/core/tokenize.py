"""Tokenisation from an artifact's `tokenizer.json` with the `tokenizers` library alone.

`transformers.AutoTokenizer` costs seconds of start-up (it imports torch); the fast tokenizer
it wraps is the same Rust object, so ids are identical when truncation is configured the way
`tokenizer(texts, truncation=True, max_length=n)` configures it (checked in the tests).
Folders without a `tokenizer.json` (slow-only tokenizers) fall back to transformers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Tokenize = Callable[[list[str]], list[list[int]]]


@dataclass(frozen=True)
class LoadedTokenizer:
    tokenize: Tokenize
    pad_id: int


def token_content(token: str | dict | None) -> str | None:
    """tokenizer_config.json writes special tokens as strings or as AddedToken dicts."""
    if isinstance(token, dict):
        return token.get("content")
    return token


def load_tokenizer(folder: Path, max_length: int) -> LoadedTokenizer:
    if (folder / "tokenizer.json").is_file():
        return rust_tokenizer(folder, max_length)
    return transformers_tokenizer(folder, max_length)


def rust_tokenizer(folder: Path, max_length: int) -> LoadedTokenizer:
    from tokenizers import Tokenizer

    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(
        max_length, direction=config.get("truncation_side", "right"), strategy="longest_first"
    )
    pad = token_content(config.get("pad_token"))
    pad_id = tokenizer.token_to_id(pad) if pad is not None else None

    def tokenize(texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in tokenizer.encode_batch(texts)]

    return LoadedTokenizer(tokenize, int(pad_id) if pad_id is not None else 0)


def transformers_tokenizer(folder: Path, max_length: int) -> LoadedTokenizer:
    from transformers import AutoTokenizer

    return wrap_transformers_tokenizer(AutoTokenizer.from_pretrained(folder), max_length)


def wrap_transformers_tokenizer(tokenizer: Any, max_length: int) -> LoadedTokenizer:
    """A loaded transformers tokenizer behind the same surface (the eager runtimes use it)."""

    def tokenize(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, truncation=True, max_length=max_length, padding=False)["input_ids"]

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return LoadedTokenizer(tokenize, int(pad_id))
