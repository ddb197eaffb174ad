"""Ducho's Python entry point, so a `run.py` written for Ducho runs with one import changed:

    from ducho_fast.compat import MultimodalFeatureExtractor   # was: from ducho.runner.Runner

    MultimodalFeatureExtractor(config_file_path="./demos/demo_recsys/config.yml").execute_extractions()

The constructor takes Ducho's arguments: `config_file_path` (a YAML file, or a folder holding
one, as Ducho accepts) and `argv`, Ducho's command-line overrides (`--visual.items.input_path=x`;
the `--config=...` entry Ducho's own `run.py` passes along is skipped). Relative paths in the
config are read from the current folder, as Ducho reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ducho_fast.api import RunOptions, extract_config
from ducho_fast.core.errors import ConfigError
from ducho_fast.runner import PassResult


def config_file(path: str | Path) -> Path:
    """Ducho's rule: a folder stands for the first `.yml` / `.yaml` file in it."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".yml", ".yaml"))
        if not found:
            raise ConfigError(f"config folder {path} holds no .yml or .yaml file")
        return found[0]
    return path


def ducho_overrides(argv: Sequence[str] | None) -> tuple[str, ...]:
    """Ducho's `argv` as dotted overrides, without the `--config=` entry it carries along."""
    return tuple(arg for arg in argv or () if not arg.removeprefix("--").startswith("config="))


class MultimodalFeatureExtractor:
    """Ducho's `ducho.runner.Runner.MultimodalFeatureExtractor`, run by ducho-fast."""

    def __init__(
        self,
        config_file_path: str | Path = "./config/config.yml",
        argv: Sequence[str] | None = None,
        options: RunOptions | None = None,
    ):
        self.config_path = config_file(config_file_path)
        self.overrides = ducho_overrides(argv)
        self.options = options or RunOptions()

    def execute_extractions(self) -> list[PassResult]:
        """Every extraction the config asks for (Ducho returns nothing; the results are
        returned here for whoever wants them)."""
        return extract_config(self.config_path, self.overrides, self.options)
