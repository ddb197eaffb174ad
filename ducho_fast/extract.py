"""`extract()`: run every pass of a plan through the pipeline, then fuse; resumable.

A plan is a list of passes. A pass is one source (an image folder or a text table) through
one or more models: images are decoded once for all the pass's models. Each pass has its own
shard state, so an interrupted run resumes pass by pass, shard by shard.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ducho_fast.core.errors import ConfigError
from ducho_fast.core.io import atomic_json
from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Batch, Failure, Listing, Shard
from ducho_fast.engine.batch_sweep import SweepCache, choose_batch_size, sweep_key
from ducho_fast.engine.fusion import fuse, join_by_id
from ducho_fast.engine.pipeline import ModelJob, ReadAhead, ShardAssembler, plan_shards, run_batches
from ducho_fast.engine.state import (
    ShardStore,
    Target,
    finalize_compact,
    write_failures,
    write_per_item,
)
from ducho_fast.modalities import Feed, Sample, modality
from ducho_fast.models.spec import ModelRef
from ducho_fast.resolve import (
    NO_SAMPLE,
    OpenModel,
    open_model,
    peek_artifact,
    peek_feed,
    peek_sweep_identity,
    sweep_identity,
)
from ducho_fast.runtime.table import RuntimeChoice


@dataclass(frozen=True)
class ModelTask:
    """One model of a pass and where each of its outputs goes."""

    ref: ModelRef
    label: str
    choice: RuntimeChoice
    layer_dirs: dict[str, str]  # graph output name -> layer folder name ("" keeps the name)
    ducho_root: Path | None  # <output>/<backend>/<model folder>, or None for compact only
    compact_root: Path | None
    fp16_storage: bool = False


@dataclass(frozen=True)
class PassTask:
    name: str
    kind: str  # a modality name (modalities.MODALITIES)
    list_items: Callable[[], Listing]
    models: tuple[ModelTask, ...]
    state_dir: Path
    failures_path: Path
    batch_size: int | None = None  # None: chosen by a timed sweep (engine/batch_sweep.py)


@dataclass(frozen=True)
class FusionTask:
    """Fuse output `a` and `b` (compact folders) by id into Ducho's per-item layout."""

    a: Path
    b: Path
    method: str
    ducho_dir: Path | None
    compact_dir: Path | None
    normalize: bool = False


@dataclass(frozen=True)
class ExtractPlan:
    passes: tuple[PassTask, ...]
    fusions: tuple[FusionTask, ...] = ()
    options: PipelineOptions = field(default_factory=PipelineOptions)
    overwrite: bool = False
    strict: bool = False


@dataclass
class PassResult:
    name: str
    items: int
    succeeded: int
    failures: list[Failure]
    metrics: dict
    outputs: list[Path]


def fingerprint_hash(fingerprint: dict) -> str:
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def targets_for(task: ModelTask, opened: OpenModel) -> dict[str, Target]:
    targets = {}
    for output in opened.output_names:
        layer = task.layer_dirs.get(output) or task.layer_dirs.get("*") or output
        name = f"{task.label}/{layer}"
        targets[output] = Target(
            name=name,
            compact_dir=task.compact_root / layer if task.compact_root else None,
            ducho_dir=task.ducho_root / layer if task.ducho_root else None,
            fp16=task.fp16_storage,
        )
    return targets


def run_pass(task: PassTask, plan: ExtractPlan, progress: bool) -> PassResult:
    timer = StageTimer()  # from the pass's start: model opening counts as start-up
    listing = task.list_items()
    known_size = task.batch_size or remembered_batch_size(task)
    early = None
    if known_size is not None:
        options = replace(plan.options, batch_size=known_size)
        early = start_decoding_early(task, plan, listing, options, timer)
    try:
        opened = [
            open_model(m.ref, task.kind, m.choice, i, export_sample(m, task.kind, listing))
            for i, m in enumerate(task.models)
        ]
        size, how = task_batch_size(task, opened, listing, timer)
        options = replace(plan.options, batch_size=size)
        result = run_opened(task, plan, progress, listing, opened, options, timer, early)
        result.metrics.update(batch_size=size, batch_size_choice=how)
        return result
    finally:
        if early is not None:
            early.reader.close()


def export_sample(model: ModelTask, kind: str, listing: Listing) -> Sample:
    """A spread of the pass's own items, when the model is about to be exported on the fly:
    the export validates on them, and int8 calibrates static quantization on them (and gates
    it on held-out ones)."""
    if not model.choice.spec.needs_artifact:
        return NO_SAMPLE
    if peek_artifact(model.ref, model.choice, kind) is not None:
        return NO_SAMPLE
    return modality(kind).export_sample(listing.items)


def remembered_batch_size(task: PassTask) -> int | None:
    """The swept batch size every model of the pass already has on record, before opening."""
    sizes = []
    for model in task.models:
        identity = peek_sweep_identity(model.ref, model.choice, task.kind)
        if identity is None:
            return None
        key = sweep_key(identity, task.kind, model.choice.threads)
        found = SweepCache(model.choice.cache).get(key)
        if found is None:
            return None
        sizes.append(found.batch_size)
    return min(sizes)


def task_batch_size(
    task: PassTask, opened: list[OpenModel], listing: Listing, timer: StageTimer
) -> tuple[int, str]:
    """The given batch size, else the smallest of the models' swept choices (one batch size
    feeds every model of an image pass)."""
    if task.batch_size is not None:
        return task.batch_size, "given"
    results = []
    with timer.stage("batch_size_sweep"):
        for model, model_open in zip(task.models, opened, strict=True):
            make_inputs = model_open.modality.sweep_inputs(model_open.feed, listing.items)
            key = sweep_key(sweep_identity(model_open.fingerprint), task.kind, model.choice.threads)
            cache = SweepCache(model.choice.cache)
            results.append(choose_batch_size(model_open.session, make_inputs, cache, key))
    return min(r.batch_size for r in results), "; ".join(r.describe() for r in results)


@dataclass(frozen=True)
class EarlyDecode:
    """Decoding started before the models opened, and what it assumed about them."""

    feeds: dict[str, Feed]
    shards: list[Shard]
    batch_size: int
    reader: ReadAhead

    def serves(self, feeds: dict[str, Feed], shards: list[Shard], batch_size: int) -> bool:
        return (self.feeds, self.shards, self.batch_size) == (feeds, shards, batch_size)


def start_decoding_early(
    task: PassTask, plan: ExtractPlan, listing: Listing, options: PipelineOptions, timer
) -> EarlyDecode | None:
    """Decode the first items while the models open, when their preprocessing is already
    known (exported artifacts) and which shards are pending cannot change (no overwrite)."""
    kind = modality(task.kind)
    if not kind.starts_early or not options.pipelined or options.workers == 0:
        return None
    found = [peek_feed(m.ref, m.choice, task.kind, i) for i, m in enumerate(task.models)]
    if any(feed is None for feed in found):
        return None
    probe = ShardStore(task.state_dir, {}, [])
    if plan.overwrite and probe.has_state():
        return None
    feeds = {feed.key: feed for feed in found if feed is not None}
    shards = plan_shards(len(listing.items), options.shard_size, probe)
    batches = kind.batches(listing.items, feeds, shards, options, timer)
    reader = ReadAhead(batches, options.prefetch_batches, timer)
    return EarlyDecode(feeds, shards, options.batch_size, reader)


def run_opened(
    task: PassTask,
    plan: ExtractPlan,
    progress: bool,
    listing: Listing,
    opened: list[OpenModel],
    options: PipelineOptions,
    timer: StageTimer,
    early: EarlyDecode | None,
) -> PassResult:
    jobs, targets = [], []
    for model, model_open in zip(task.models, opened, strict=True):
        model_targets = targets_for(model, model_open)
        targets += list(model_targets.values())
        jobs.append(
            ModelJob(
                model.label,
                model_open.session,
                model_open.feed.key,
                {out: t.name for out, t in model_targets.items()},
            )
        )
    fingerprint = {
        "pass": task.name,
        "items": hashlib.sha256("\n".join(i.item_id for i in listing.items).encode()).hexdigest(),
        "shard_size": plan.options.shard_size,
        "models": [o.fingerprint for o in opened],
    }
    store = ShardStore(task.state_dir, fingerprint, targets)
    store.open(plan.overwrite)
    shards = plan_shards(len(listing.items), plan.options.shard_size, store)
    feeds = {o.feed.key: o.feed for o in opened}
    if early is not None and early.serves(feeds, shards, options.batch_size):
        batches: Iterable[Batch] = early.reader
    else:
        batches = modality(task.kind).batches(listing.items, feeds, shards, options, timer)
    run_all(batches, jobs, store, listing, options, timer, task.name, progress)
    return finish_pass(task, store, listing, targets, timer)


def run_all(batches, jobs, store, listing, options, timer, name: str, progress: bool) -> None:
    from tqdm import tqdm

    shards = plan_shards(len(listing.items), options.shard_size, store)
    pending = sum(len(s.positions) for s in shards)
    label = ", ".join(job.label for job in jobs)
    with tqdm(
        total=pending,
        desc=f"{name} [{label}]",
        unit="item",
        disable=not progress,
        file=sys.stderr,
        dynamic_ncols=True,
    ) as bar:
        run_batches(
            batches,
            jobs,
            ShardAssembler(store, listing.items, timer),
            options,
            timer,
            on_progress=bar.update,
        )


def finish_pass(task: PassTask, store: ShardStore, listing: Listing, targets, timer) -> PassResult:
    """Concatenate committed shards into the compact files and write failures.tsv."""
    metrics = timer.summary()
    shards = store.committed()
    failures = list(listing.failures) + [Failure(**f) for s in shards for f in s["failures"]]
    outputs = []
    for target in targets:
        manifest = {
            "target": target.name,
            "pass": task.name,
            "fingerprint": store.fingerprint,
            "metrics": metrics,
        }
        outputs.append(finalize_compact(target, shards, manifest) or target.ducho_dir)
    succeeded = sum(len(s["ids"]) for s in shards)
    return PassResult(
        task.name,
        succeeded + len(failures),
        succeeded,
        failures,
        metrics,
        [o for o in outputs if o is not None],
    )


def run_fusion(task: FusionTask) -> Path:
    ids_a = (task.a / "ids.txt").read_text().splitlines()
    ids_b = (task.b / "ids.txt").read_text().splitlines()
    ids, rows_a, rows_b = join_by_id(ids_a, ids_b)
    a = np.load(task.a / "features.npy", mmap_mode="r")
    b = np.load(task.b / "features.npy", mmap_mode="r")
    fused = fuse(
        [np.asarray(a[rows_a], dtype=np.float32), np.asarray(b[rows_b], np.float32)],
        task.method,
        task.normalize,
    )
    if task.ducho_dir is not None:
        write_per_item(task.ducho_dir, ids, fused)
    if task.compact_dir is not None:
        task.compact_dir.mkdir(parents=True, exist_ok=True)
        from ducho_fast.core.io import atomic_bytes, npy_bytes

        atomic_bytes(task.compact_dir / "features.npy", npy_bytes(fused))
        atomic_bytes(task.compact_dir / "ids.txt", ("\n".join(ids) + "\n").encode())
        atomic_json(
            task.compact_dir / "manifest.json",
            {
                "fusion": task.method,
                "inputs": [str(task.a), str(task.b)],
                "count": len(ids),
                "dim": int(fused.shape[1]) if fused.size else 0,
            },
        )
    return task.ducho_dir or task.compact_dir  # type: ignore[return-value]


def extract(plan: ExtractPlan, progress: bool = True) -> list[PassResult]:
    """Run the plan; raise ConfigError for a strict run with failures or when nothing worked."""
    results = [run_pass(task, plan, progress) for task in plan.passes]
    by_file: dict[Path, dict[Failure, None]] = {}
    for task, result in zip(plan.passes, results, strict=True):
        by_file.setdefault(task.failures_path, {}).update(dict.fromkeys(result.failures))
    for path, failures in by_file.items():
        write_failures(path, list(failures))
    for fusion in plan.fusions:
        run_fusion(fusion)
    total_ok = sum(r.succeeded for r in results)
    total_failed = sum(len(r.failures) for r in results)
    if results and total_ok == 0:
        raise ConfigError(f"nothing was extracted: {total_failed} items failed (see failures.tsv)")
    if plan.strict and total_failed:
        raise ConfigError(f"--strict: {total_failed} items failed (see failures.tsv)")
    return results
