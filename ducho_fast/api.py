"""The public entry points: `export`, `extract` and `load`, and the one `RunOptions` object.

`extract` takes a Ducho YAML config (path) or a `SingleModelJob` (one model over an image
folder or a text table, no config); `RunOptions` carries the run's settings either way and,
for a config, overrides the file's keys (validated like the file itself).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from ducho_fast.config import DuchoConfig, load_config, revalidate
from ducho_fast.core.errors import ConfigError
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Listing
from ducho_fast.ducho_plan import checked_plan
from ducho_fast.engine.autotune import planned_choice
from ducho_fast.engine.sinks import get_sink, sinks_for
from ducho_fast.engine.sources import list_images, list_texts
from ducho_fast.models.spec import ModelRef
from ducho_fast.plan import ExtractPlan, ModelTask, PassTask
from ducho_fast.runner import PassResult, extract_plan
from ducho_fast.runtime.table import RuntimeChoice

if TYPE_CHECKING:
    from ducho_fast.encoder import Encoder
    from ducho_fast.exporter.api import ExportConfig


@dataclass(frozen=True)
class RunOptions:
    """How a run runs. For a config, each value given (not None) overrides the file's key."""

    runtime: str | None = None
    precision: str | None = None
    workers: int | None = None
    output_format: str | None = None
    strict: bool | None = None
    overwrite: bool | None = None
    shard_size: int | None = None
    item_timeout: float | None = None
    jpeg_draft: bool | None = None
    ort_provider: str | None = None
    threads: int | None = None
    min_cosine: float | None = None  # fidelity floor when runtime or precision is auto
    trust_pickle: bool | None = None  # load pickled torch modules (runs their code)
    pipelined: bool = True
    progress: bool = True

    def config_keys(self) -> dict[str, object]:
        """The values that override a config file's top-level keys."""
        own = ("pipelined", "progress")
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in own and getattr(self, f.name) is not None
        }


@dataclass(frozen=True)
class SingleModelJob:
    """The config-free form: one model over an image folder or a text table."""

    model: str
    output: Path
    images: Path | None = None
    texts: Path | None = None
    id_column: str = "id"
    text_column: str = "text"
    layers: tuple[str, ...] = ()
    batch_size: int | None = None  # None: chosen by a timed sweep, remembered per machine
    weights: str = "DEFAULT"  # torchvision: DEFAULT, none (random) or a state-dict file
    limit: int | None = None  # only the first N items (benchmarks, smoke runs)
    encoding: str = "utf-8"  # of the text table


def extract(
    source: str | Path | SingleModelJob,
    options: RunOptions = RunOptions(),
    overrides: Sequence[str] = (),
) -> list[PassResult]:
    """Run a Ducho YAML config (a path, with Ducho-style dotted `overrides`) or one model."""
    if isinstance(source, SingleModelJob):
        if overrides:
            raise ConfigError("dotted overrides apply to a config file, not a single-model job")
        return extract_single(source, options)
    return extract_config(Path(source), overrides, options)


def extract_config(
    path: str | Path, overrides: Sequence[str] = (), options: RunOptions = RunOptions()
) -> list[PassResult]:
    """Run a Ducho YAML config (with dotted overrides and our options)."""
    path = Path(path)
    config = with_options(load_config(path, overrides), options)
    plan = checked_plan(config, path.resolve().parent)
    if not options.pipelined:
        plan = with_pipeline(plan, pipelined=False, workers=0)
    return extract_plan(plan, progress=options.progress)


def with_options(config: DuchoConfig, options: RunOptions) -> DuchoConfig:
    return revalidate(config, options.config_keys())


def extract_single(job: SingleModelJob, options: RunOptions = RunOptions()) -> list[PassResult]:
    if (job.images is None) == (job.texts is None):
        raise ConfigError("give exactly one of --images DIR or --texts FILE")
    kind = "image" if job.images is not None else "text"
    choice, auto = planned_choice(
        options.runtime or "onnxruntime",
        options.precision or "fp32",
        options.min_cosine or 0.99,
        ort_provider=options.ort_provider or "cpu",
        threads=options.threads or 0,
    )
    label = Path(job.model).name or job.model
    trees = {"ducho": job.output / "ducho", "fast": job.output}
    model = ModelTask(
        ref=ModelRef(
            job.model,
            task=kind,
            layers=job.layers,
            weights=job.weights,
            trust_pickle=bool(options.trust_pickle),
        ),
        label=label,
        choice=choice,
        auto=auto,
        layer_dirs={},
        roots={
            sink: trees[get_sink(sink).layout] / label
            for sink in sinks_for(options.output_format or "compact")
        },
    )
    task = PassTask(
        f"{kind}s",
        kind,
        single_lister(job),
        (model,),
        job.output / ".state" / label,
        job.output / "failures.tsv",
        job.batch_size,
    )
    pipeline = PipelineOptions(
        workers=2 if options.workers is None else options.workers,
        shard_size=options.shard_size or 1024,
        item_timeout_s=options.item_timeout or 60.0,
        jpeg_draft=bool(options.jpeg_draft),
        pipelined=options.pipelined,
    )
    plan = ExtractPlan((task,), (), pipeline, bool(options.overwrite), bool(options.strict))
    return extract_plan(plan, progress=options.progress)


def single_lister(job: SingleModelJob) -> Callable[[], Listing]:
    if job.images is not None:
        lister: Callable[[], Listing] = partial(list_images, job.images)
    else:
        assert job.texts is not None
        lister = partial(list_texts, job.texts, job.id_column, (job.text_column,), job.encoding)
        lister()  # validate columns before anything runs
    if job.limit is not None:
        lister = partial(first_items, lister, job.limit)
    return lister


def first_items(lister: Callable[[], Listing], limit: int) -> Listing:
    listing = lister()
    return Listing(listing.items[:limit], listing.failures)


def with_pipeline(plan: ExtractPlan, **changes) -> ExtractPlan:
    return replace(plan, options=replace(plan.options, **changes))


def export(config: ExportConfig) -> Path:
    """Export `config.model` to a validated artifact folder (see `exporter.api.export`)."""
    from ducho_fast.exporter.api import export as export_artifact  # imports torch

    return export_artifact(config)


def load(artifact_dir: str | Path, choice: RuntimeChoice | None = None) -> Encoder:
    """Open an exported artifact as an encoder with `encode_images` / `encode_texts`."""
    from ducho_fast.encoder import load as load_encoder

    return load_encoder(artifact_dir, choice)
