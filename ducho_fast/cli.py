"""The `ducho-fast` command: thin adapters that build a config and call the library."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from ducho_fast.core import log
from ducho_fast.core.errors import DuchoFastError
from ducho_fast.engine.sinks import format_names, sinks_for
from ducho_fast.runtime.table import EXPORT_PRECISIONS, all_precisions, runtime_names

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def one_line(message: str) -> str:
    """A message on one line: continuation lines joined with `; `."""
    parts = [part.strip().removeprefix("- ") for part in message.splitlines() if part.strip()]
    text = parts[0] if parts else ""
    for part in parts[1:]:
        text += (" " if text.endswith(":") else "; ") + part
    return text.rstrip(".")


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {one_line(message)}", err=True)
    sys.exit(code)


def usage_hint(exc: click.UsageError) -> str:
    command = exc.ctx.command_path if exc.ctx is not None else "ducho-fast"
    return f"see `{command} --help`"


class Commands(click.Group):
    """The `ducho-fast` group: every error is one line, `error: <what>; <what to do>`, exit 1
    (usage errors exit 2), with a traceback only under --debug."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            fail(f"{exc.format_message().rstrip('.')}; {usage_hint(exc)}", exc.exit_code)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("interrupted; rerun the same command to resume where it stopped", 130)
        except DuchoFastError as exc:
            if log.debug():
                raise
            fail(str(exc), 1)
        except Exception as exc:
            if log.debug():
                raise
            fail(
                f"unexpected {type(exc).__name__}: {exc}; rerun with --debug for the traceback "
                "and report it",
                1,
            )
        sys.exit(code if isinstance(code, int) else 0)


def positive_ints(value: str, param: click.Parameter) -> tuple[int, ...]:
    """`32,64` -> (32, 64); anything else is a usage error naming the option."""
    try:
        sizes = tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None
    if min(sizes) < 1:
        raise click.BadParameter(f"{value!r}: batch sizes must be at least 1")
    return sizes


def output_formats(value: str | None) -> str | None:
    """`--output-format`: one sink, several joined by commas, or `both`; else a usage error."""
    if value is None:
        return None
    try:
        sinks_for(value)
    except DuchoFastError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def image_files(folder: Path | None) -> tuple[Path, ...]:
    if folder is None:
        return ()
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))


def text_lines(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ()
    return tuple(line for line in path.read_text().splitlines() if line.strip())


@click.group(cls=Commands)
@click.version_option(package_name="ducho-fast")
@click.option(
    "--debug",
    is_flag=True,
    help="Show tracebacks and other libraries' warnings (also: DUCHO_FAST_DEBUG=1).",
)
def main(debug: bool) -> None:
    """Fast, validated multimodal feature extraction for recommender systems.

    Errors are one line (`error: ...`), exit 1 (usage errors 2); --debug shows tracebacks.
    """
    log.set_debug(debug)
    log.console(force=True)
    log.quiet_third_party()


@main.command("export")
@click.argument("model")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path),
    required=True,
    help="Artifact folder to create (replaced if it exists).",
)
@click.option(
    "--task",
    type=click.Choice(["auto", "image", "text", "image-text"]),
    default="auto",
    show_default=True,
    help="Which towers to export (auto: every tower the model has).",
)
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="Named layer to output (repeatable), e.g. avgpool, classifier.3.",
)
@click.option(
    "--precision",
    type=click.Choice(EXPORT_PRECISIONS),
    default="fp32",
    show_default=True,
    help="Graph precision; fp16 and int8 must pass their fidelity gates against eager.",
)
@click.option(
    "--int8-mode",
    type=click.Choice(
        [
            "auto",
            "dynamic-per-tensor",
            "dynamic-per-channel",
            "dynamic-attention-only",
            "static",
            "nncf",
        ]
    ),
    help="static: ONNX Runtime's calibrated QDQ; nncf: NNCF's (OpenVINO's choice). Both "
    "calibrate on --sample-images/--sample-texts.",
    default="auto",
    show_default=True,
)
@click.option("--opset", type=int, default=None, help="ONNX opset (default 18).")
@click.option(
    "--sample-images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Your images: used for validation and int8 calibration.",
)
@click.option(
    "--sample-texts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A text file, one text per line: used for int8 calibration.",
)
@click.option(
    "--weights",
    default="DEFAULT",
    show_default=True,
    help="torchvision weights: DEFAULT, none (random) or a state-dict file.",
)
@click.option("--tensorrt", is_flag=True, help="Also build TensorRT engines (needs a GPU).")
@click.option(
    "--trust-pickle", is_flag=True, help="Allow loading a pickled module (runs arbitrary code)."
)
def export_command(
    model,
    output,
    task,
    layers,
    precision,
    int8_mode,
    opset,
    sample_images,
    sample_texts,
    weights,
    tensorrt,
    trust_pickle,
) -> None:
    """Export MODEL (hub id, local folder, torchvision name or pickle) to a validated artifact."""
    from ducho_fast.exporter.api import ExportConfig, Sample, export
    from ducho_fast.exporter.onnx_export import DEFAULT_OPSET
    from ducho_fast.models.spec import ModelRef

    config = ExportConfig(
        model=ModelRef(
            model, task=task, layers=tuple(layers), weights=weights, trust_pickle=trust_pickle
        ),
        output_dir=output,
        precision=precision,
        opset=opset or DEFAULT_OPSET,
        int8_mode=int8_mode,
        sample=Sample(images=image_files(sample_images), texts=text_lines(sample_texts)),
        tensorrt=tensorrt,
    )
    folder = export(config)
    from ducho_fast.artifact.manifest import read_manifest

    manifest = read_manifest(folder)
    for graph in manifest.graphs:
        worst = graph.validation[graph.precision]
        click.echo(
            f"{graph.name}: {graph.file} ({graph.precision}"
            f"{', ' + graph.quantization if graph.quantization else ''}) "
            f"validated: min cosine {worst['min_cosine']:.6f}, max-abs {worst['max_abs']:.3g}"
        )
    click.echo(f"artifact written to {folder}")


def print_summary(results, run_log: Path | None = None) -> None:
    """Per pass: counts and speed (or that a resumed pass had nothing left); then every path
    written: the output folders, failures.tsv, fusions and the run log."""
    for result in results:
        click.echo(pass_line(result))
        m = result.metrics
        if not m.get("resumed_all") and not m.get("no_items"):
            stages = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(m["stage_seconds"].items()))
            click.echo(f"  stages: {stages}")
        if m.get("runtime_choice"):
            click.echo(f"  {m['runtime_choice']}")
        if m.get("jpeg_draft"):
            click.echo(f"  {m['jpeg_draft']}")
        if m.get("batch_size_choice") not in (None, "given"):
            click.echo(f"  {m['batch_size_choice']}")
    click.echo("written:")
    for result in results:
        for output in result.outputs:
            click.echo(f"  {output}")
    for folder in results[-1].fusions if results else ():
        click.echo(f"  {folder} (fusion)")
    for path in dict.fromkeys(r.failures_path for r in results if r.failures_path):
        if path.is_file():
            click.echo(f"  {path} (failed and skipped items)")
    if run_log is not None:
        click.echo(f"  {run_log} (run log)")


def pass_line(result) -> str:
    m, failed = result.metrics, len(result.failures)
    head = f"{result.name}: {result.succeeded}/{result.items} items, {failed} failed"
    if m.get("no_items"):
        return f"{head}; no items to extract"
    if m.get("resumed_all"):
        return f"{head}; resumed: all {result.succeeded} items already done"
    return (
        f"{head}; {m['items_per_s']:.1f} items/s ({m['items_per_s_after_startup']:.1f} "
        f"after start-up); inference waited {100 * m['inference_wait_share']:.0f}%"
    )


@main.command(
    "extract", context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="A Ducho 2.0 YAML config (dotted overrides may follow: --a.b=value).",
)
@click.option("--model", help="Config-free form: one model (hub id, folder or artifact).")
@click.option("--images", type=click.Path(path_type=Path), help="Config-free: image folder.")
@click.option("--texts", type=click.Path(path_type=Path), help="Config-free: TSV/CSV of texts.")
@click.option("--audio", type=click.Path(path_type=Path), help="Config-free: audio folder.")
@click.option(
    "--id-column", default="id", show_default=True, help="Config-free: the table's id column."
)
@click.option(
    "--text-column",
    default="text",
    show_default=True,
    help="Config-free: the table's text column.",
)
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="Config-free: the text table's encoding (e.g. latin-1, cp1252).",
)
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Config-free: output folder.")
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="Config-free: a named layer to output (repeatable), e.g. avgpool.",
)
@click.option(
    "--weights",
    help="Config-free: torchvision weights, DEFAULT, none (random) or a state-dict file.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Items per inference batch, for every model (default: picked by a short timed sweep, "
    "then remembered; with --config it overrides each model's batch_size).",
)
@click.option(
    "--runtime",
    type=click.Choice([*runtime_names(), "auto"]),
    help="auto: the fastest runtime here whose fidelity passes (measured once, remembered).",
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(0, 1, min_open=True),
    help="Fidelity floor for --runtime/--precision auto (default 0.99 against fp32) and for "
    "--jpeg-draft (against exact decoding).",
)
@click.option(
    "--precision",
    type=click.Choice([*all_precisions(), "auto"]),
    help="bf16: torch runtimes on CPUs with native bf16 (AVX-512 BF16 / AMX).",
)
@click.option(
    "--workers", type=click.IntRange(min=0), help="Decode worker processes (0: decode inline)."
)
@click.option(
    "--output-format",
    callback=lambda ctx, param, value: output_formats(value),
    help=f"Which sinks write the output: {', '.join(format_names())}, or several joined by "
    "commas (both: ducho and compact).",
)
@click.option(
    "--shard-size", type=click.IntRange(min=1), help="Items per resumable shard (default 1024)."
)
@click.option(
    "--item-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds before a stuck decode is recorded (default 60).",
)
@click.option(
    "--jpeg-draft",
    is_flag=True,
    default=None,
    help="Decode JPEGs at reduced size (faster, not exact; never below the model's input); "
    "gated: kept only where features stay within --min-cosine of exact decoding.",
)
@click.option(
    "--ort-provider",
    type=click.Choice(["cpu", "cuda", "tensorrt"]),
    help="ONNX Runtime execution provider (GPU ones need onnxruntime-gpu; no silent fallback).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    help="Inference threads (default 0: every core; measured best here even beside 2 decode "
    "workers, see benchmarks/README.md).",
)
@click.option(
    "--ducho-ids",
    is_flag=True,
    default=None,
    help="Cut image ids at the first `.` as Ducho does (default keeps a.b.jpg -> a.b).",
)
@click.option(
    "--fp16-storage", is_flag=True, default=None, help="Store compact features as float16."
)
@click.option(
    "--normalize-before-fusion",
    is_flag=True,
    default=None,
    help="With --config: L2-normalise each side before fusing.",
)
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help="Where on-the-fly exports and measurements are cached "
    "(default $DUCHO_FAST_CACHE or ~/.cache/ducho-fast).",
)
@click.option(
    "--trust-pickle",
    is_flag=True,
    default=None,
    help="Allow loading pickled torch modules (runs arbitrary code); a config's trust_pickle.",
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    help="Where passes run: local (this process), ray (Ray Data; pip install ducho-fast[ray]).",
)
@click.option(
    "--ray-address",
    help="With --engine ray: auto or ray://host:port joins a cluster (default: a local Ray).",
)
@click.option(
    "--ray-workers",
    type=click.IntRange(min=1),
    help="With --engine ray: inference actors (default one per GPU, else per core); "
    "--threads is each actor's inference threads.",
)
@click.option(
    "--gpus",
    "gpu_list",
    help="Ducho's gpu list, e.g. 0,1: several GPUs get one worker process each.",
)
@click.option("--sequential", is_flag=True, help="No worker processes or threads (reference).")
@click.option("--strict", is_flag=True, default=None, help="Exit non-zero if any item failed.")
@click.option(
    "--overwrite",
    is_flag=True,
    default=None,
    help="Replace output written under a different configuration.",
)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.pass_context
def extract_command(ctx: click.Context, config_path: Path | None, **flags) -> None:
    """Extract features: from a Ducho config, or for one model over images, texts or audio.

    With --config, the run flags override the file's keys; the config-free flags are refused
    (use the file's keys or a dotted override such as --textual.items.item_column=VALUE).
    """
    from ducho_fast.api import RunOptions, SingleModelJob, extract_config, extract_single

    sequential, no_progress = flags.pop("sequential"), flags.pop("no_progress")
    single = {name: flags.pop(name) for name in SINGLE_FLAGS}
    options = RunOptions(**flags, pipelined=not sequential, progress=not no_progress)
    if config_path is None and ctx.args:
        raise click.UsageError(
            f"unknown option(s) {' '.join(ctx.args)} (dotted overrides --a.b=value need --config)"
        )
    if config_path is not None:
        refuse_single_flags(ctx)
        refuse_unknown_options(ctx)
        results = extract_config(config_path, tuple(ctx.args), options)
    elif single["model"] is not None and single["output"] is not None:
        if options.normalize_before_fusion:
            raise click.UsageError("--normalize-before-fusion applies to a config's fusions")
        single["layers"] = tuple(single["layers"])
        single["weights"] = single["weights"] or "DEFAULT"
        results = extract_single(SingleModelJob(**single), options)
    else:
        raise click.UsageError(
            "give --config FILE, or --model M --output DIR with --images DIR, --texts FILE "
            "or --audio DIR"
        )
    folder = results[0].failures_path.parent if results and results[0].failures_path else None
    print_summary(results, folder / log.RUN_LOG if folder else None)


# The config-free form's flags, and the key each is in a Ducho config (where a block says it).
SINGLE_FLAGS = {
    "model": "model.0.model_name",
    "images": "input_path",
    "texts": "input_path",
    "audio": "input_path",
    "id_column": "item_column",
    "text_column": "text_column",
    "encoding": "encoding",
    "output": "output_path",
    "layers": "model.0.output_layers",
    "weights": "model.0.weights",
}


def refuse_unknown_options(ctx: click.Context) -> None:
    """Extra arguments must be Ducho-style overrides (`--a.b=value`, `--dataset_path=x`: the
    config checks their keys); a mistyped flag is named, with the closest real one."""
    import difflib

    for arg in ctx.args:
        if arg.startswith("--") and "=" in arg:
            continue
        flags = [opt for param in ctx.command.params for opt in param.opts if opt.startswith("--")]
        close = difflib.get_close_matches(arg.partition("=")[0], flags, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        if arg == "--debug":
            hint = "--debug goes before the command (ducho-fast --debug extract ...); "
        raise click.UsageError(
            f"unknown option {arg!r}; {hint}dotted overrides look like --textual.items.key=value"
        )


def refuse_single_flags(ctx: click.Context) -> None:
    """A config-free flag beside --config would be ignored: refuse it, naming the config key."""
    from click.core import ParameterSource

    given = [
        name
        for name in SINGLE_FLAGS
        if ctx.get_parameter_source(name)
        in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    ]
    if given:
        flags = ", ".join("--" + ("layer" if n == "layers" else n.replace("_", "-")) for n in given)
        key = SINGLE_FLAGS[given[0]]
        raise click.UsageError(
            f"{flags} belong(s) to the config-free form and would be ignored with --config; "
            f"set the config's key instead, in the file or as a dotted override such as "
            f"--<modality>.items.{key}=VALUE"
        )


@main.command("bench")
@click.option("--model", required=True, help="Hub id, local folder or torchvision name.")
@click.option("--images", type=click.Path(path_type=Path), help="Image folder.")
@click.option("--texts", type=click.Path(path_type=Path), help="TSV/CSV of texts.")
@click.option(
    "--audio",
    type=click.Path(path_type=Path),
    multiple=True,
    help="Audio folder(s): the audio suite (real-time factor vs a Ducho-style loop).",
)
@click.option("--layer", default="last_hidden_state", help="Audio: the layer to extract.")
@click.option("--id-column", default="id", show_default=True, help="The table's id column.")
@click.option("--text-column", default="text", show_default=True, help="The table's text column.")
@click.option(
    "--runtimes",
    default="torch,onnxruntime",
    show_default=True,
    help="Comma-separated runtimes to measure.",
)
@click.option(
    "--precisions",
    default="fp32,int8",
    show_default=True,
    help="Comma-separated precisions to measure.",
)
@click.option(
    "--batch-sizes",
    default="32",
    show_default=True,
    callback=lambda ctx, param, value: positive_ints(value, param),
    help="Comma-separated batch sizes to time.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Timed repeats per measurement.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Decode worker processes end to end.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N items.")
@click.option("--weights", default="DEFAULT", help="torchvision weights: DEFAULT, none or a file.")
@click.option("--label", help="Name of the result files (default: the model's name).")
@click.option("--no-baseline", is_flag=True, help="Skip the Ducho-style baseline.")
@click.option("--no-end-to-end", is_flag=True, help="Pure inference only.")
@click.option("--jpeg-draft", is_flag=True, help="Also time reduced-size JPEG decoding.")
@click.option(
    "--peers",
    help="Also measure peers (sentence-transformers backends, fastembed, torch scripts): "
    "`all` or names; needs the `peers` extra.",
)
@click.option(
    "--catalogue", type=click.IntRange(min=1), help="End to end on the data tiled to N items."
)
@click.option(
    "--trust-pickle", is_flag=True, help="The model is a pickled module you trust (runs its code)."
)
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: also run each variant end to end on Ray Data (a local Ray per command).",
)
@click.option(
    "--ray-workers",
    default="",
    callback=lambda ctx, param, value: positive_ints(value, param) if value else (),
    help="With --engine ray: comma-separated actor counts to run (default: the engine's).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Inference threads end to end (per Ray actor); 0: every core.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=Path("benchmarks/results/local"),
    show_default=True,
    help="Folder for the JSON, Markdown and PNG results.",
)
def bench_command(
    model, images, texts, audio, layer, id_column, text_column, runtimes, precisions,
    batch_sizes, repeats, workers, limit, weights, label, no_baseline, no_end_to_end,
    jpeg_draft, peers, catalogue, trust_pickle, engine, ray_workers, threads, output,
) -> None:  # fmt: skip
    """Measure runtimes x precisions on the same data: pure inference, end to end, baseline."""
    from ducho_fast.bench import BenchConfig, run_bench

    if audio:
        from ducho_fast.bench.audio import AudioBenchConfig, run_audio_bench
        from ducho_fast.runtime.table import runtime_spec

        jobs = tuple(
            f"{r}:{p}"
            for r in runtimes.split(",")
            for p in precisions.split(",")
            if p in runtime_spec(r).precisions
        )
        audio_config = AudioBenchConfig(
            model, tuple(audio), output, layer, jobs, batch_sizes[0], workers, repeats, limit, label
        )
        run_audio_bench(audio_config, log=click.echo)
        click.echo(f"wrote {output}/{audio_config.name}.json and .md")
        return

    config = BenchConfig(
        model=model,
        output_dir=output,
        images=images,
        texts=texts,
        id_column=id_column,
        text_column=text_column,
        runtimes=tuple(runtimes.split(",")),
        precisions=tuple(precisions.split(",")),
        batch_sizes=batch_sizes,
        repeats=repeats,
        workers=workers,
        limit=limit,
        weights=weights,
        baseline=not no_baseline,
        end_to_end=not no_end_to_end,
        jpeg_draft=jpeg_draft,
        label=label,
        peers=None if peers is None else tuple(p for p in peers.split(",") if p != "all"),
        catalogue=catalogue,
        trust_pickle=trust_pickle,
        engine=engine,
        ray_workers=ray_workers,
        threads=threads,
    )
    run_bench(config, log=click.echo)
    click.echo(f"wrote {output}/{config.name}.json, .md and .png")


def shares(value: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not train,valid,test shares") from None
    if len(parts) != 3:
        raise click.BadParameter(f"{value!r}: give three shares, e.g. 0.8,0.1,0.1")
    return parts  # type: ignore[return-value]


@main.command("handoff")
@click.option(
    "--features",
    "features",
    multiple=True,
    required=True,
    help="An output folder of a run, or NAME=DIR (names image, text, audio, ...); repeat it.",
)
@click.option(
    "--interactions",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="CSV/TSV with a header (delimiter by suffix, else sniffed).",
)
@click.option("--user-column", required=True, help="The interactions' user id column.")
@click.option("--item-column", required=True, help="The interactions' item id column.")
@click.option("--time-column", help="A time column: splits per user in time order.")
@click.option("--format", "format_", required=True, help="mmrec, elliot or cornac.")
@click.option(
    "--output", "-o", required=True, type=click.Path(path_type=Path), help="Folder to write."
)
@click.option(
    "--split",
    "split",
    default="0.8,0.1,0.1",
    show_default=True,
    help="train,valid,test shares per user.",
)
@click.option("--seed", default=0, show_default=True, help="Shuffle seed without --time-column.")
@click.option("--user-features", is_flag=True, help="Also write each user's mean item features.")
@click.option(
    "--half-life",
    type=click.FloatRange(min=0, min_open=True),
    help="Time-decay the user features (in the time column's units).",
)
@click.option("--strict", is_flag=True, help="Refuse items missing features or interactions.")
def handoff_command(features, format_, split, user_features, **flags) -> None:
    """Hand extraction outputs and interactions to MMRec, Elliot or Cornac."""
    from ducho_fast.handoff import FeatureSource, HandoffOptions, handoff

    options = HandoffOptions(
        features=tuple(FeatureSource.parse(value) for value in features),
        format=format_,
        shares=shares(split),
        users=user_features,
        **flags,
    )
    report = handoff(options)
    click.echo(
        f"{report.format}: {report.users} users, {report.items} items, interactions "
        + ", ".join(f"{n} {c}" for n, c in report.interactions.items())
    )
    if report.missing_items:
        click.echo(
            f"left out: {report.missing_items} items with interactions but no features "
            f"({report.dropped_interactions} interactions), listed in missing-features.tsv"
        )
    if report.unused_items:
        click.echo(
            f"unused: {report.unused_items} items with features but no interactions, "
            "listed in unused-features.tsv"
        )
    click.echo(f"wrote {report.folder}")


@main.command("inspect")
@click.argument("folder", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--neighbours", default=3, show_default=True, help="Items to show neighbours of.")
@click.option("--top", default=5, show_default=True, help="Neighbours per item.")
@click.option("--map", "map_path", type=click.Path(path_type=Path), help="Write a PNG map here.")
@click.option("--table", type=click.Path(path_type=Path, exists=True), help="Item table (CSV/TSV).")
@click.option("--id-column", default="id", show_default=True, help="The table's id column.")
@click.option("--colour-column", help="The table's column that colours the map.")
@click.option("--select", help="Which output (part of its folder) for neighbours and the map.")
def inspect_command(folder: Path, **flags) -> None:
    """What a run wrote: outputs, counts, failures, fingerprints, timings, neighbours, a map."""
    from ducho_fast.outputs.inspect import InspectOptions, inspect_run, report

    for line in report(inspect_run(folder, InspectOptions(**flags))):
        click.echo(line)


if __name__ == "__main__":
    main()
