"""What one benchmark run measures: one model, one data set, a grid of runtime x precision."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.records import Item
from ducho_fast.engine.sources import list_images, list_texts
from ducho_fast.runtime.table import all_precisions, runtime_names


def bench_items(
    kind: str,
    images: Path | str | None,
    texts: Path | str | None,
    id_column: str,
    text_column: str,
    limit: int | None,
) -> tuple[Item, ...]:
    """The items a benchmark measures: the data set's valid items, the first `limit` of them."""
    if kind == "image":
        assert images is not None
        items = list_images(Path(images)).items
    else:
        assert texts is not None
        items = list_texts(Path(texts), id_column, (text_column,)).items
    return items[:limit] if limit else items


@dataclass(frozen=True)
class Variant:
    runtime: str
    precision: str

    @property
    def name(self) -> str:
        return f"{self.runtime}:{self.precision}"


@dataclass(frozen=True)
class BenchConfig:
    """Settings of `ducho-fast bench`; `limit` caps the items read from the data set.

    `weights` reaches torchvision models (`none` = random weights, as on machines with no hub).
    `baseline` adds the Ducho-style reference run (see `bench.baseline`).
    """

    model: str
    output_dir: Path
    images: Path | None = None
    texts: Path | None = None
    id_column: str = "id"
    text_column: str = "text"
    runtimes: tuple[str, ...] = ("torch", "onnxruntime")
    precisions: tuple[str, ...] = ("fp32", "int8")
    batch_sizes: tuple[int, ...] = (32,)
    repeats: int = 3
    workers: int = 2
    limit: int | None = None
    weights: str = "DEFAULT"
    baseline: bool = True
    end_to_end: bool = True
    jpeg_draft: bool = (
        False  # also run artifact runtimes end to end with reduced-size JPEG decoding
    )
    label: str | None = None
    # peers (bench.peers) measured beside ducho-fast: None = none, () = every peer that fits
    peers: tuple[str, ...] | None = None
    catalogue: int | None = None  # end to end on the data tiled to this many items
    # the end-to-end jobs to run (variant names like `openvino:bf16`, `+jpeg-draft` forms,
    # `peer NAME`, `baseline`); None: every one. Catalogue-sized runs take minutes per job.
    end_to_end_jobs: tuple[str, ...] | None = None
    trust_pickle: bool = False  # the model is a pickled torch module the user trusts
    # engine "ray": each runtime:precision also runs end to end on Ray Data (a local Ray
    # started by the command, so its start-up counts), once per actor count in `ray_workers`
    # (() : the engine's default), beside the local run it is compared with
    engine: str = "local"
    ray_workers: tuple[int, ...] = ()
    threads: int = 0  # inference threads of an end-to-end run (per Ray actor); 0: every core

    @property
    def with_peers(self) -> bool:
        return self.peers is not None

    def __post_init__(self) -> None:
        if self.images is None and self.texts is None:
            raise ConfigError("give --images DIR and/or --texts FILE to benchmark on")
        unknown = [r for r in self.runtimes if r not in runtime_names()]
        if unknown:
            raise ConfigError(f"unknown runtime(s) {unknown}; use some of {list(runtime_names())}")
        known = sorted(all_precisions())
        unknown = [p for p in self.precisions if p not in known]
        if unknown:
            raise ConfigError(f"unknown precision(s) {unknown}; use some of {known}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError("batch sizes must be positive integers")
        if self.repeats < 1:
            raise ConfigError("repeats must be at least 1")
        if self.engine not in ("local", "ray"):
            raise ConfigError(f"unknown engine {self.engine!r}; use local or ray")
        if self.ray_workers and min(self.ray_workers) < 1:
            raise ConfigError("ray workers must be positive integers")
        if self.catalogue is not None and self.catalogue < 1:
            raise ConfigError("catalogue size must be a positive number of items")
        if self.peers:
            from ducho_fast.bench.peers import PEERS

            for name in self.peers:
                PEERS.lookup(name)  # an unknown name fails here, listing the known ones

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(
            kind
            for kind, source in (("image", self.images), ("text", self.texts))
            if source is not None
        )

    @property
    def variants(self) -> tuple[Variant, ...]:
        return tuple(Variant(r, p) for r in self.runtimes for p in self.precisions)

    @property
    def name(self) -> str:
        return self.label or Path(self.model).name or self.model
