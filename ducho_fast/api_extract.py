"""Python API for extraction: from a Ducho config file, or for one model without a config."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

from ducho_fast.config import load_config
from ducho_fast.core.errors import ConfigError
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Listing
from ducho_fast.ducho_plan import build_plan
from ducho_fast.engine.sources import list_images, list_texts
from ducho_fast.extract import ExtractPlan, ModelTask, PassResult, PassTask, extract
from ducho_fast.models.spec import ModelRef
from ducho_fast.runtime.table import RuntimeChoice


@dataclass(frozen=True)
class RunOptions:
    """Command-line options that override the config file (None keeps the file's value)."""

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
    pipelined: bool = True
    progress: bool = True


def extract_config(
    path: Path, overrides: Sequence[str] = (), options: RunOptions = RunOptions()
) -> list[PassResult]:
    """Run a Ducho YAML config (with dotted overrides and our flags)."""
    flags = [
        f"{key}={value}"
        for key, value in options.__dict__.items()
        if value is not None and key not in ("progress", "pipelined")
    ]
    config = load_config(path, [*overrides, *flags])
    plan = build_plan(config, path.resolve().parent)
    if not options.pipelined:
        plan = with_pipeline(plan, pipelined=False, workers=0)
    return extract(plan, progress=options.progress)


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
    runtime: str = "onnxruntime"
    precision: str = "fp32"
    weights: str = "DEFAULT"  # torchvision: DEFAULT, none (random) or a state-dict file
    limit: int | None = None  # only the first N items (benchmarks, smoke runs)


def extract_single(job: SingleModelJob, options: RunOptions = RunOptions()) -> list[PassResult]:
    if (job.images is None) == (job.texts is None):
        raise ConfigError("give exactly one of --images DIR or --texts FILE")
    kind = "image" if job.images is not None else "text"
    choice = RuntimeChoice(
        runtime=options.runtime or job.runtime,  # type: ignore[arg-type]
        precision=options.precision or job.precision,
        ort_provider=options.ort_provider or "cpu",
        threads=options.threads or 0,
    )
    fmt = options.output_format or "compact"
    label = Path(job.model).name or job.model
    model = ModelTask(
        ref=ModelRef(job.model, task=kind, layers=job.layers, weights=job.weights),
        label=label,
        choice=choice,
        layer_dirs={},
        ducho_root=job.output / "ducho" / label if fmt in ("ducho", "both") else None,
        compact_root=job.output / label if fmt in ("compact", "both") else None,
    )
    if job.images is not None:
        lister = partial(list_images, job.images)
    else:
        assert job.texts is not None
        lister = partial(list_texts, job.texts, job.id_column, (job.text_column,))
        lister()  # validate columns before anything runs
    if job.limit is not None:
        lister = partial(first_items, lister, job.limit)
    task = PassTask(
        f"{kind}s",
        kind,
        lister,
        (model,),  # type: ignore[arg-type]
        job.output / ".state" / label,
        job.output / "failures.tsv",
        job.batch_size,
    )
    options_ = PipelineOptions(
        workers=2 if options.workers is None else options.workers,
        shard_size=options.shard_size or 1024,
        item_timeout_s=options.item_timeout or 60.0,
        jpeg_draft=bool(options.jpeg_draft),
        pipelined=options.pipelined,
    )
    plan = ExtractPlan((task,), (), options_, bool(options.overwrite), bool(options.strict))
    return extract(plan, progress=options.progress)


def first_items(lister: Callable[[], Listing], limit: int) -> Listing:
    listing = lister()
    return Listing(listing.items[:limit], listing.failures)


def with_pipeline(plan: ExtractPlan, **changes) -> ExtractPlan:
    return replace(plan, options=replace(plan.options, **changes))
