"""The runner: prepare each pass of a plan once, hand it to an executor, finish, then fuse.

Preparing a pass lists its items, opens its models (exporting on the fly), picks the batch
size, fingerprints it and finds the shards still pending; the executor (engine/executors)
commits those shards; finishing hands every committed shard to the sinks and collects the
failures. Each pass has its own state, so an interrupted run resumes pass by pass, shard by
shard; fusion reads the passes' committed features, never a sink's files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from ducho_fast.core.errors import ExtractionError
from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.records import Failure, Listing, Shard
from ducho_fast.engine.autotune import auto_choice
from ducho_fast.engine.batch_sweep import SweepCache, choose_batch_size, sweep_key
from ducho_fast.engine.executors import PreparedPass, get_executor
from ducho_fast.engine.fusion import fuse, join_by_id
from ducho_fast.engine.pipeline import ModelJob, ReadAhead, plan_shards
from ducho_fast.engine.sinks import get_sink
from ducho_fast.engine.state import ShardStore, committed_output, write_failures
from ducho_fast.modalities import Feed, Sample, modality
from ducho_fast.plan import ExtractPlan, FusionTask, ModelTask, PassTask
from ducho_fast.resolve import (
    NO_SAMPLE,
    OpenModel,
    open_model,
    peek_artifact,
    peek_feed,
    peek_sweep_identity,
    sweep_identity,
)


@dataclass
class PassResult:
    name: str
    items: int
    succeeded: int
    failures: list[Failure]
    metrics: dict
    outputs: list[Path]


def run_pass(task: PassTask, plan: ExtractPlan, progress: bool) -> PassResult:
    timer = StageTimer()  # from the pass's start: model opening counts as start-up
    listing = task.list_items()
    task, runtime_choices = measured_choices(task, listing, timer)
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
        prepared = prepare_pass(task, plan, listing, opened, size, timer, early)
        get_executor(plan.executor).run(prepared, progress)
        result = finish_pass(task, prepared)
        result.metrics.update(batch_size=size, batch_size_choice=how)
        if runtime_choices:
            result.metrics["runtime_choice"] = "; ".join(runtime_choices)
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


def measured_choices(
    task: PassTask, listing: Listing, timer: StageTimer
) -> tuple[PassTask, list[str]]:
    """Models whose runtime or precision is `auto` get the measured (or remembered) choice."""
    if not any(model.auto for model in task.models):
        return task, []
    models, lines = [], []
    with timer.stage("runtime_choice"):
        for model in task.models:
            if model.auto is None:
                models.append(model)
                continue
            items = list(listing.items)
            choice, line = auto_choice(model.ref, task.kind, model.choice, model.auto, items)
            models.append(replace(model, choice=choice, auto=None))
            lines.append(f"{model.label}: {line}")
    return replace(task, models=tuple(models)), lines


def prepare_pass(
    task: PassTask,
    plan: ExtractPlan,
    listing: Listing,
    opened: list[OpenModel],
    batch_size: int,
    timer: StageTimer,
    early: EarlyDecode | None,
) -> PreparedPass:
    """Jobs, outputs, fingerprint, store and pending shards: decided once, before any batch."""
    jobs, outputs = [], []
    for model, model_open in zip(task.models, opened, strict=True):
        by_graph = {
            name: model.output(name, model_open.item_shapes.get(name))
            for name in model_open.output_names
        }
        outputs += list(by_graph.values())
        routes = {name: output.name for name, output in by_graph.items()}
        jobs.append(ModelJob(model.label, model_open.session, model_open.feed.key, routes))
    fingerprint = {
        "pass": task.name,
        "items": hashlib.sha256("\n".join(i.item_id for i in listing.items).encode()).hexdigest(),
        "shard_size": plan.options.shard_size,
        "models": [o.fingerprint for o in opened],
    }
    store = ShardStore(task.state_dir, fingerprint, outputs)
    store.open(plan.overwrite)
    options = replace(plan.options, batch_size=batch_size)
    shards = plan_shards(len(listing.items), options.shard_size, store)
    feeds = {o.feed.key: o.feed for o in opened}
    started = (
        early.reader if early is not None and early.serves(feeds, shards, batch_size) else None
    )
    return PreparedPass(
        task.name,
        modality(task.kind),
        listing,
        feeds,
        tuple(jobs),
        store,
        tuple(shards),
        options,
        timer,
        started,
    )


def finish_pass(task: PassTask, prepared: PreparedPass) -> PassResult:
    """Hand every committed shard to each sink's end-of-pass step; collect the failures."""
    store = prepared.store
    metrics = prepared.timer.summary()
    shards = store.committed()
    failures = list(prepared.listing.failures)
    failures += [Failure(**f) for s in shards for f in s["failures"]]
    ids = [item_id for shard in shards for item_id in shard["ids"]]
    written = []
    for output in store.outputs.values():
        record = {
            "target": output.name,
            "pass": task.name,
            "fingerprint": store.fingerprint,
            "metrics": metrics,
        }
        for sink_name, folder in output.folders.items():
            reader = lambda out=output: map(out.per_item, store.read_features(out.name, shards))  # noqa: E731
            get_sink(sink_name).finalize(folder, ids, reader, record, output.fp16)
        folders = output.folders
        written += [folders.get("compact") or next(iter(folders.values()))] if folders else []
    return PassResult(task.name, len(ids) + len(failures), len(ids), failures, metrics, written)


def run_fusion(task: FusionTask) -> Path | None:
    """Fuse two finished outputs by id, from the passes' committed features."""
    ids_a, a = committed_output(task.a.state_dir, task.a.output)
    ids_b, b = committed_output(task.b.state_dir, task.b.output)
    ids, rows_a, rows_b = join_by_id(ids_a, ids_b)
    fused = fuse([a[rows_a], b[rows_b]], task.method, task.normalize)
    record = {
        "fusion": task.method,
        "inputs": [task.a.output, task.b.output],
        "normalize": task.normalize,
    }
    for sink_name, folder in task.folders.items():
        sink = get_sink(sink_name)
        sink.write_shard(folder, ids, fused)
        sink.finalize(folder, ids, lambda: iter([fused]), record, False)
    return next(iter(task.folders.values()), None)


def extract_plan(plan: ExtractPlan, progress: bool = True) -> list[PassResult]:
    """Run the plan; raise ExtractionError for a strict run with failures or when nothing
    worked (after writing failures.tsv)."""
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
        raise ExtractionError(
            f"nothing was extracted: {total_failed} items failed (see failures.tsv)"
        )
    if plan.strict and total_failed:
        raise ExtractionError(f"--strict: {total_failed} items failed (see failures.tsv)")
    return results
