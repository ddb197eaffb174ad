"""The runner: prepare each pass of a plan once, hand it to an executor, finish, then fuse.

Preparing a pass lists its items, opens its models (exporting on the fly), picks the batch
size, fingerprints it and finds the shards still pending; the executor (engine/executors)
commits those shards; finishing hands every committed shard to the sinks and collects the
failures. Each pass has its own state, so an interrupted run resumes pass by pass, shard by
shard; fusion reads the passes' committed features, never a sink's files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from ducho_fast.core import log as logs
from ducho_fast.core.errors import ExtractionError
from ducho_fast.core.locks import folder_locks
from ducho_fast.core.metrics import StageTimer
from ducho_fast.core.options import PipelineOptions
from ducho_fast.core.preflight import check_folders
from ducho_fast.core.records import Failure, Listing, Shard
from ducho_fast.engine.autotune import auto_choice
from ducho_fast.engine.batch_sweep import SweepCache, choose_batch_size, sweep_key
from ducho_fast.engine.draft_gate import GateModel, gated_options, remembered_options
from ducho_fast.engine.executors import PreparedPass, executor_scope, get_executor
from ducho_fast.engine.fingerprint import FileStamps, item_fingerprints
from ducho_fast.engine.fusion import fuse, join_by_id
from ducho_fast.engine.pipeline import ModelJob, ReadAhead
from ducho_fast.engine.sinks import discard, get_sink
from ducho_fast.engine.state import ShardStore, committed_output, live_blocks, write_failures
from ducho_fast.modalities import Feed, Sample, modality
from ducho_fast.plan import ExtractPlan, FusionTask, ModelTask, PassTask
from ducho_fast.resolve import (
    NO_SAMPLE,
    OpenModel,
    describe_model,
    open_model,
    peek_artifact,
    peek_feed,
    peek_sweep_identity,
    sweep_identity,
)

log = logs.get("run")
SEQUENCE_SHARD_ITEMS = 32


@dataclass
class PassResult:
    name: str
    items: int
    succeeded: int
    failures: list[Failure]
    metrics: dict
    outputs: list[Path]  # every folder a sink wrote (Ducho's, compact, ...)
    failures_path: Path | None = None
    fusions: list[Path] = field(default_factory=list)  # fused folders (on the last result)


@dataclass(frozen=True)
class PassInput:
    """The pass's items and each one's content fingerprint, which a rerun compares."""

    listing: Listing
    fingerprints: dict[str, str | None]  # item id -> fingerprint (engine/fingerprint.py)
    stamps: FileStamps  # what spares re-hashing unchanged files on the next run


def pass_input(task: PassTask, listing: Listing) -> PassInput:
    stamps = ShardStore(task.state_dir, {}, []).read_stamps()
    return PassInput(listing, *item_fingerprints(listing.items, stamps))


def run_pass(
    task: PassTask, plan: ExtractPlan, progress: bool, listing: Listing | None = None
) -> PassResult:
    timer = StageTimer()  # from the pass's start: model opening counts as start-up
    plan = sequence_shards(task, plan)
    listing = task.list_items() if listing is None else listing
    if not listing.items:  # nothing to run: no model is opened (or exported) for it
        log.warning(
            "%s: no items to extract (%d skipped or failed)", task.name, len(listing.failures)
        )
        return PassResult(
            task.name,
            len(listing.failures),
            0,
            list(listing.failures),
            {**timer.summary(), "no_items": True},
            [],
            task.failures_path,
        )
    with timer.stage("fingerprint"):
        inputs = pass_input(task, listing)
    task, runtime_choices = measured_choices(task, listing, timer, plan.options.item_timeout_s)
    known_size = task.batch_size or remembered_batch_size(task)
    early = None
    drafted = remembered_draft(task, plan.options)  # None: the draft gate is still to measure
    if known_size is not None and plan.executor == "local" and drafted is not None:
        options = replace(drafted, batch_size=known_size)  # others decode elsewhere
        early = start_decoding_early(task, plan, inputs, options, timer)
    # Executors that run the models elsewhere (ray, gpus) reopen them there: with the batch
    # size known (no sweep to run) and no draft gate to measure, this process only reads what
    # it needs from the artifact, and holds no session (on the first GPU, for nothing).
    elsewhere = plan.executor != "local" and known_size is not None and drafted is not None
    opener = describe_model if elsewhere else open_model
    try:
        opened = [
            opener(m.ref, task.kind, m.choice, i, export_sample(m, task, listing, plan))
            for i, m in enumerate(task.models)
        ]
        plan, draft_lines = gate_draft(task, plan, opened, listing, timer)
        size, how = task_batch_size(task, opened, listing, timer)
        prepared = prepare_pass(task, plan, inputs, opened, size, timer, early)
        get_executor(plan.executor).run(prepared, progress)
        result = finish_pass(task, prepared)
        result.metrics.update(batch_size=size, batch_size_choice=how)
        result.metrics["resumed_all"] = not prepared.shards  # every shard was committed before
        if runtime_choices:
            result.metrics["runtime_choice"] = "; ".join(runtime_choices)
        if draft_lines:
            result.metrics["jpeg_draft"] = "; ".join(draft_lines)
        return result
    finally:
        if early is not None:
            early.reader.close()


def sequence_shards(task: PassTask, plan: ExtractPlan) -> ExtractPlan:
    """A pass with a sequence output (audio `pooling: none`) commits shards of at most
    SEQUENCE_SHARD_ITEMS clips: a shard's rows are held until it commits, and a clip's frames
    grow with its length (a 2-minute clip: 6,000 frames of D floats)."""
    if not any(model.ref.pooling == "none" for model in task.models):
        return plan
    size = min(plan.options.shard_size, SEQUENCE_SHARD_ITEMS)
    return replace(plan, options=replace(plan.options, shard_size=size))


def export_sample(model: ModelTask, task: PassTask, listing: Listing, plan: ExtractPlan) -> Sample:
    """A spread of the pass's own items, when the model is about to be exported on the fly:
    the export validates on them, and int8 calibrates static quantization on them (and gates
    it on held-out ones)."""
    if not model.choice.spec.needs_artifact:
        return NO_SAMPLE
    if peek_artifact(model.ref, model.choice, task.kind) is not None:
        return NO_SAMPLE
    return modality(task.kind).export_sample(listing.items, plan.options.item_timeout_s)


def remembered_draft(task: PassTask, options: PipelineOptions) -> PipelineOptions | None:
    """The pass's options after the --jpeg-draft gate, when its result is on record for
    every model (read before opening them); None when it is still to be measured."""
    if not options.jpeg_draft:
        return options
    models = []
    for i, model in enumerate(task.models):
        feed = peek_feed(model.ref, model.choice, task.kind, i)
        identity = peek_sweep_identity(model.ref, model.choice, task.kind)
        if feed is None or identity is None:
            return None
        models.append(GateModel(model.label, feed.prepare, identity, model.choice.cache))
    return remembered_options(models, options)


def gate_draft(
    task: PassTask, plan: ExtractPlan, opened: list[OpenModel], listing: Listing, timer
) -> tuple[ExtractPlan, list[str]]:
    """--jpeg-draft kept or switched off by its fidelity gate (engine/draft_gate.py)."""
    if task.kind != "image" or not plan.options.jpeg_draft:
        return plan, []
    models = [
        GateModel(m.label, o.feed.prepare, sweep_identity(o.fingerprint), m.choice.cache, o.session)
        for m, o in zip(task.models, opened, strict=True)
    ]
    with timer.stage("draft_gate"):
        options, lines = gated_options(models, listing.items, plan.options, plan.strict)
    for line in lines:
        (log.info if options.jpeg_draft else log.warning)("%s: %s", task.name, line)
    return replace(plan, options=options), lines


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
    options: PipelineOptions
    reader: ReadAhead

    def serves(self, feeds: dict[str, Feed], shards: list[Shard], options: PipelineOptions) -> bool:
        return (self.feeds, self.shards, self.options) == (feeds, shards, options)


def start_decoding_early(
    task: PassTask, plan: ExtractPlan, inputs: PassInput, options: PipelineOptions, timer
) -> EarlyDecode | None:
    """Decode the first items while the models open, when their preprocessing is already
    known (exported artifacts) and which shards are pending cannot change (no overwrite)."""
    listing = inputs.listing
    kind = modality(task.kind)
    if not kind.starts_early or not options.pipelined or options.workers == 0:
        return None
    found = [peek_feed(m.ref, m.choice, task.kind, i) for i, m in enumerate(task.models)]
    if any(feed is None for feed in found):
        return None
    probe = ShardStore(task.state_dir, {}, [], inputs.fingerprints)
    if plan.overwrite and probe.has_state():
        return None
    feeds = {feed.key: feed for feed in found if feed is not None}
    shards = probe.pending_shards(listing.items, options.shard_size)
    batches = kind.batches(listing.items, feeds, shards, options, timer)
    reader = ReadAhead(batches, options.prefetch_batches, timer)
    return EarlyDecode(feeds, shards, options, reader)


def measured_choices(
    task: PassTask, listing: Listing, timer: StageTimer, item_timeout_s: float
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
            choice, line = auto_choice(
                model.ref, task.kind, model.choice, model.auto, items, item_timeout_s
            )
            models.append(replace(model, choice=choice, auto=None))
            lines.append(f"{model.label}: {line}")
    return replace(task, models=tuple(models)), lines


def prepare_pass(
    task: PassTask,
    plan: ExtractPlan,
    inputs: PassInput,
    opened: list[OpenModel],
    batch_size: int,
    timer: StageTimer,
    early: EarlyDecode | None,
) -> PreparedPass:
    """Jobs, outputs, fingerprint, store and pending shards: decided once, before any batch."""
    jobs, outputs = model_jobs(task, opened)
    fingerprint = {
        "pass": task.name,
        "models": [o.fingerprint for o in opened],
        "decode": decoding(task.kind, plan.options),
    }  # what every item's features depend on; each item's own input has its fingerprint
    listing = inputs.listing
    store = ShardStore(task.state_dir, fingerprint, outputs, inputs.fingerprints)
    store.open(plan.overwrite)
    store.write_stamps(inputs.stamps)
    options = replace(plan.options, batch_size=batch_size)
    shards = store.pending_shards(listing.items, options.shard_size)
    feeds = {o.feed.key: o.feed for o in opened}
    started = early.reader if early is not None and early.serves(feeds, shards, options) else None
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
        plan.engine,
        partial(reopen_jobs, task, tuple(o.fingerprint for o in opened)),
        max(model.choice.threads for model in task.models),
    )


def model_jobs(task: PassTask, opened: list[OpenModel]) -> tuple[list[ModelJob], list]:
    """Each opened model as a job (graph outputs routed to their targets), and the outputs."""
    jobs, outputs = [], []
    for model, model_open in zip(task.models, opened, strict=True):
        by_graph = {
            name: model.output(name, model_open.item_shapes.get(name), model_open.sequence)
            for name in model_open.output_names
        }
        outputs += list(by_graph.values())
        routes = {name: output.name for name, output in by_graph.items()}
        jobs.append(ModelJob(model.label, model_open.session, model_open.feed.key, routes))
    return jobs, outputs


def reopen_jobs(
    task: PassTask, fingerprints: tuple[dict, ...], threads: int
) -> tuple[tuple[ModelJob, ...], dict[str, Feed]]:
    """The pass's models opened again in a worker (a Ray actor, a GPU's process) with
    `threads` inference threads (0: the plan's). A worker whose model differs from the
    driver's (another version or cache on a cluster node) is refused, never mixed in."""
    opened = []
    for index, model in enumerate(task.models):
        choice = replace(model.choice, threads=threads) if threads else model.choice
        opened.append(open_model(model.ref, task.kind, choice, index))
    for model, model_open, expected in zip(task.models, opened, fingerprints, strict=True):
        if model_open.fingerprint != expected:
            raise ExtractionError(
                f"{task.name}: a worker opened {model.label} differently from the driver "
                f"(worker {model_open.fingerprint} vs driver {expected}); install the same "
                "ducho-fast and model files on every node, or share the cache folder"
            )
    jobs, _ = model_jobs(task, opened)
    return tuple(jobs), {o.feed.key: o.feed for o in opened}


def decoding(kind: str, options: PipelineOptions) -> dict:
    """Decoding options that change pixels (part of the pass's fingerprint)."""
    if kind != "image":
        return {}
    if not options.jpeg_draft:
        return {"jpeg_draft": False}
    return {"jpeg_draft": True, "draft_margin": options.draft_margin}


def finish_pass(task: PassTask, prepared: PreparedPass) -> PassResult:
    """Hand the pass's live rows to each sink's end-of-pass step (after removing the files of
    items no longer live); collect the failures."""
    store = prepared.store
    metrics = prepared.timer.summary()
    view = store.finish(prepared.listing.items)
    failures = list(prepared.listing.failures) + view.failures
    ids = view.ids
    written = []
    for output in store.outputs.values():
        record = {
            "target": output.name,
            "pass": task.name,
            "fingerprint": store.fingerprint,
            "metrics": metrics,
        }
        for sink_name, folder in output.folders.items():
            sink = get_sink(sink_name)
            discard(sink, folder, view.stale)
            reader = lambda out=output: map(  # noqa: E731
                out.per_item, live_blocks(store.state_dir, out.name, view, out.sequence)
            )
            sink.finalize(folder, ids, reader, record, output.fp16)
        written += [f for f in output.folders.values() if f not in written]  # one per folder
    return PassResult(
        task.name,
        len(ids) + len(failures),
        len(ids),
        failures,
        metrics,
        written,
        task.failures_path,
    )


def run_fusion(task: FusionTask) -> Path | None:
    """Fuse two finished outputs by id, from the passes' committed features."""
    view_a, a = committed_output(task.a.state_dir, task.a.output)
    view_b, b = committed_output(task.b.state_dir, task.b.output)
    ids, rows_a, rows_b = join_by_id(view_a.ids, view_b.ids)
    fused = fuse([a[rows_a], b[rows_b]], task.method, task.normalize)
    known = {*view_a.ids, *view_a.stale, *view_b.ids, *view_b.stale}
    stale = sorted(known - set(ids))  # no longer in both inputs, or failed in one
    record = {
        "fusion": task.method,
        "inputs": [task.a.output, task.b.output],
        "normalize": task.normalize,
    }
    for sink_name, folder in task.folders.items():
        sink = get_sink(sink_name)
        discard(sink, folder, stale)
        sink.write_shard(folder, ids, fused)
        sink.finalize(folder, ids, lambda: iter([fused]), record, False)
    return next(iter(task.folders.values()), None)


def source_of(list_items: Callable[[], Listing]) -> str:
    """The folder or table a pass lists, for messages: the first path its lister was given
    (through `partial`s and wrappers such as CleanedListing)."""
    lister: object = list_items
    while not isinstance(lister, partial) and hasattr(lister, "list_items"):
        lister = lister.list_items
    for arg in lister.args if isinstance(lister, partial) else ():
        if isinstance(arg, Path):
            return str(arg)
        if callable(arg):
            return source_of(arg)
    return "its input"


def refuse_empty(passes: Sequence[PassTask], listings: Sequence[Listing]) -> None:
    """An input with nothing in it is a mistake to say before any model opens, not a run
    that ends with zero features."""
    for task, listing in zip(passes, listings, strict=True):
        if not listing.items and not listing.failures:
            raise ExtractionError(
                f"{task.name}: {source_of(task.list_items)} has no items (an empty folder, "
                "or a table with a header only): nothing to extract, nothing was run"
            )


def written_folders(plan: ExtractPlan) -> list[tuple[str, Path]]:
    """Every folder the plan writes into (outputs, state, fusions) and the caches it uses."""
    folders: list[tuple[str, Path]] = []
    for task in plan.passes:
        folders += [("output folder", task.failures_path.parent)]
        folders += [("state folder", task.state_dir.parent)]
        folders += [("output folder", root) for m in task.models for root in m.roots.values()]
        folders += [("cache folder", m.choice.cache) for m in task.models]
    folders += [("output folder", f.parent) for t in plan.fusions for f in t.folders.values()]
    return folders


def lock_folders(plan: ExtractPlan) -> set[Path]:
    """One lock per output root and state root: two runs writing the same outputs (one
    wiping them with --overwrite) would corrupt each other."""
    return {t.failures_path.parent for t in plan.passes} | {t.state_dir.parent for t in plan.passes}


def extract_plan(plan: ExtractPlan, progress: bool = True) -> list[PassResult]:
    """Check the folders the plan writes, lock the output folders, then run the plan (see
    `run_plan`); all before any model opens."""
    check_folders(written_folders(plan))
    with folder_locks(lock_folders(plan)):
        return run_plan(plan, progress)


def run_plan(plan: ExtractPlan, progress: bool) -> list[PassResult]:
    """Run the plan; raise ExtractionError for an empty input (before anything runs), for a
    strict run with failures, or when every item failed (after writing failures.tsv)."""
    listings = [task.list_items() for task in plan.passes]
    refuse_empty(plan.passes, listings)
    with executor_scope(plan.executor, plan.engine):
        results = [
            run_pass(task, plan, progress, listing)
            for task, listing in zip(plan.passes, listings, strict=True)
        ]
    by_file: dict[Path, dict[Failure, None]] = {}
    for task, result in zip(plan.passes, results, strict=True):
        by_file.setdefault(task.failures_path, {}).update(dict.fromkeys(result.failures))
    for path, failures in by_file.items():
        write_failures(path, list(failures))
    total_ok = sum(r.succeeded for r in results)
    total_failed = sum(len(r.failures) for r in results)
    where = ", ".join(str(path) for path in by_file)
    if results and total_ok == 0:
        what = f"all {total_failed} items failed"  # an input with no items stopped earlier
        raise ExtractionError(
            f"nothing was extracted: {what}; check the inputs (reasons per item in {where})"
        )
    fused = [folder for fusion in plan.fusions if (folder := run_fusion(fusion)) is not None]
    if results:
        results[-1].fusions = fused
    if plan.strict and total_failed:
        raise ExtractionError(
            f"--strict: {total_failed} items failed; reasons per item in {where} "
            "(the features of the others are written)"
        )
    return results
