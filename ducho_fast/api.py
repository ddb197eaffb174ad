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

from ducho_fast.config import DuchoConfig, blocks, load_config, parse_config, revalidate
from ducho_fast.core import log as logs
from ducho_fast.core.errors import ConfigError
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.preflight import check_folders
from ducho_fast.core.records import Listing
from ducho_fast.ducho_plan import checked_plan
from ducho_fast.engine.autotune import default_runtime, planned_choice
from ducho_fast.engine.executors import EngineOptions
from ducho_fast.engine.sinks import get_sink, sinks_for
from ducho_fast.engine.sources import list_images, list_texts
from ducho_fast.engine.state import STATE_HOME
from ducho_fast.models.spec import ModelRef
from ducho_fast.plan import ExtractPlan, ModelTask, PassTask, output_tag
from ducho_fast.runner import PassResult, extract_plan, written_folders
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
    ducho_ids: bool | None = None  # cut image ids at the first `.` as Ducho does
    fp16_storage: bool | None = None  # compact features as float16
    normalize_before_fusion: bool | None = None  # a config's fusions only
    cache_dir: Path | str | None = None  # on-the-fly exports and measurements
    batch_size: int | None = None  # every model's batch size (a config's per-model key too)
    trust_pickle: bool | None = None  # load pickled torch modules (runs their code)
    engine: str | None = None  # local, or ray (Ray Data: `pip install ducho-fast[ray]`)
    ray_address: str | None = None  # None: a local Ray for the run; auto or ray://host:port
    ray_workers: int | None = None  # Ray inference actors (None: one per GPU, else per core)
    gpu_list: str | None = None  # Ducho's `gpu list` (several GPUs: one process per GPU)
    pipelined: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        """Out-of-range values fail here, naming the option (the CLI checks its flags too)."""
        limits = {
            "workers": (0, "0 decodes inline"),
            "shard_size": (1, "items per resumable shard"),
            "threads": (0, "0 uses every core"),
            "batch_size": (1, "items per inference batch"),
            "ray_workers": (1, "Ray inference actors"),
        }
        for name, (low, why) in limits.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ConfigError(f"{name} must be at least {low} (got {value}; {why})")
        if self.item_timeout is not None and self.item_timeout <= 0:
            raise ConfigError(f"item_timeout must be positive seconds (got {self.item_timeout})")
        if self.min_cosine is not None and not 0 < self.min_cosine <= 1:
            raise ConfigError(f"min_cosine must be in (0, 1] (got {self.min_cosine})")

    def config_keys(self) -> dict[str, object]:
        """The values that override a config file's top-level keys."""
        own = ("pipelined", "progress", "batch_size")
        keys = {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name not in own and getattr(self, f.name) is not None
        }
        if "cache_dir" in keys:
            keys["cache_dir"] = str(keys["cache_dir"])
        if "gpu_list" in keys:
            keys["gpu list"] = keys.pop("gpu_list")
        return keys


@dataclass(frozen=True)
class SingleModelJob:
    """The config-free form: one model over an image folder, a text table or an audio folder."""

    model: str | Path
    output: Path | str
    images: Path | str | None = None
    texts: Path | str | None = None
    id_column: str = "id"
    text_column: str = "text"
    layers: tuple[str, ...] = ()
    batch_size: int | None = None  # None: chosen by a timed sweep, remembered per machine
    weights: str = "DEFAULT"  # torchvision: DEFAULT, none (random) or a state-dict file
    limit: int | None = None  # only the first N items (benchmarks, smoke runs)
    encoding: str = "utf-8"  # of the text table
    audio: Path | str | None = None

    def __post_init__(self) -> None:
        """Paths may be given as str; they are kept as Path."""
        object.__setattr__(self, "model", str(self.model))
        for name in ("output", "images", "texts", "audio"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))


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
    return run_logged(plan, options, f"extract --config {path}")


def with_options(config: DuchoConfig, options: RunOptions) -> DuchoConfig:
    """The file's keys with the options given: top-level keys, and a batch size for every
    model."""
    config = revalidate(config, options.config_keys())
    if options.batch_size is None:
        return config
    data = config.model_dump(by_alias=True, exclude_unset=True)
    for modality, source, _ in blocks(config):
        for entry in data[modality][source]["model"]:
            entry["batch_size"] = options.batch_size
    return parse_config(data)


def extract_single(job: SingleModelJob, options: RunOptions = RunOptions()) -> list[PassResult]:
    given = {"image": job.images, "text": job.texts, "audio": job.audio}
    kinds = [kind for kind, value in given.items() if value is not None]
    if len(kinds) != 1:
        raise ConfigError("give exactly one of --images DIR, --texts FILE or --audio DIR")
    kind = kinds[0]
    if options.normalize_before_fusion:
        raise ConfigError("normalize_before_fusion applies to a config's fusions; drop it")
    choice, auto = planned_choice(
        options.runtime or default_runtime(options.precision or "fp32"),
        options.precision or "fp32",
        options.min_cosine or 0.99,
        cache_dir=Path(options.cache_dir).expanduser() if options.cache_dir else None,
        ort_provider=options.ort_provider or "cpu",
        threads=options.threads or 0,
    )
    label = (Path(job.model).name or job.model) + output_tag(choice, auto)
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
        fp16_storage=bool(options.fp16_storage),
        roots={
            sink: trees[get_sink(sink).layout] / label
            for sink in sinks_for(options.output_format or "compact")
        },
    )
    task = PassTask(
        "audio" if kind == "audio" else f"{kind}s",
        kind,
        single_lister(job, bool(options.ducho_ids)),
        (model,),
        job.output / STATE_HOME / label,
        job.output / "failures.tsv",
        job.batch_size or options.batch_size,
    )
    pipeline = PipelineOptions(
        workers=2 if options.workers is None else options.workers,
        shard_size=options.shard_size or 1024,
        item_timeout_s=options.item_timeout or 60.0,
        jpeg_draft=bool(options.jpeg_draft),
        draft_min_cosine=options.min_cosine or 0.99,
        pipelined=options.pipelined,
    )
    plan = ExtractPlan(
        (task,),
        (),
        pipeline,
        bool(options.overwrite),
        bool(options.strict),
        options.engine or "local",
        EngineOptions(options.ray_address, options.ray_workers),
    )
    return run_logged(plan, options, f"extract --model {job.model} --output {job.output}")


def run_logged(plan: ExtractPlan, options: RunOptions, title: str) -> list[PassResult]:
    """Run the plan with its log appended to `run.log` beside failures.tsv."""
    logs.console()
    check_folders(written_folders(plan))  # before the log file makes any folder
    folder = plan.passes[0].failures_path.parent if plan.passes else None
    if folder is None:
        return extract_plan(plan, progress=options.progress)
    with logs.run_log(folder, title):
        return extract_plan(plan, progress=options.progress)


def single_lister(job: SingleModelJob, ducho_ids: bool = False) -> Callable[[], Listing]:
    if job.images is not None or job.audio is not None:
        folder = job.images if job.images is not None else job.audio
        lister: Callable[[], Listing] = partial(list_images, folder, ducho_ids)
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
    """Open an exported artifact as an encoder with `encode_images` / `encode_texts`; a model
    folder, hub id or torchvision name is exported first, as `extract` does on the fly."""
    from ducho_fast.encoder import load as load_encoder

    return load_encoder(artifact_dir, choice)
