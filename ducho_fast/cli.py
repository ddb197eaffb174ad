"""The `ducho-fast` command: thin adapters that build a config and call the library."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import click

from ducho_fast.core.errors import DuchoFastError
from ducho_fast.engine.sinks import format_names
from ducho_fast.runtime.table import EXPORT_PRECISIONS, all_precisions, runtime_names

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def reports_errors(command: Callable) -> Callable:
    """Turn library errors into a clean message and exit code 1 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DuchoFastError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def image_files(folder: Path | None) -> tuple[Path, ...]:
    if folder is None:
        return ()
    return tuple(sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))


def text_lines(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ()
    return tuple(line for line in path.read_text().splitlines() if line.strip())


@click.group()
@click.version_option(package_name="ducho-fast")
def main() -> None:
    """Fast, validated multimodal feature extraction for recommender systems."""


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
)
@click.option(
    "--layer",
    "layers",
    multiple=True,
    help="Named layer to output (repeatable), e.g. avgpool, classifier.3.",
)
@click.option(
    "--precision", type=click.Choice(EXPORT_PRECISIONS), default="fp32", show_default=True
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
@reports_errors
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


def print_summary(results) -> None:
    for result in results:
        m = result.metrics
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(m["stage_seconds"].items()))
        click.echo(
            f"{result.name}: {result.succeeded}/{result.items} items, {len(result.failures)} "
            f"failed; {m['items_per_s']:.1f} items/s ({m['items_per_s_after_startup']:.1f} "
            f"after start-up); inference waited {100 * m['inference_wait_share']:.0f}%"
        )
        click.echo(f"  stages: {stages}")
        if m.get("runtime_choice"):
            click.echo(f"  {m['runtime_choice']}")
        if m.get("batch_size_choice") not in (None, "given"):
            click.echo(f"  {m['batch_size_choice']}")
        for output in result.outputs:
            click.echo(f"  -> {output}")


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
@click.option("--id-column", default="id", show_default=True)
@click.option("--text-column", default="text", show_default=True)
@click.option(
    "--encoding",
    default="utf-8",
    show_default=True,
    help="Config-free: the text table's encoding (e.g. latin-1, cp1252).",
)
@click.option("--output", type=click.Path(path_type=Path), help="Config-free: output folder.")
@click.option("--layer", "layers", multiple=True)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Items per inference batch (default: picked by a short timed sweep, then remembered).",
)
@click.option(
    "--runtime",
    type=click.Choice([*runtime_names(), "auto"]),
    help="auto: the fastest runtime here whose fidelity passes (measured once, remembered).",
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(0, 1, min_open=True),
    help="Fidelity floor for --runtime/--precision auto (default 0.99 against fp32).",
)
@click.option(
    "--precision",
    type=click.Choice([*all_precisions(), "auto"]),
    help="bf16: torch runtimes on CPUs with native bf16 (AVX-512 BF16 / AMX).",
)
@click.option("--workers", type=int, help="Decode worker processes (0: decode inline).")
@click.option(
    "--output-format",
    type=click.Choice(format_names()),
    help="Which sinks write the output (both: ducho and compact).",
)
@click.option("--shard-size", type=int)
@click.option("--item-timeout", type=float, help="Seconds before a stuck decode is recorded.")
@click.option(
    "--jpeg-draft",
    is_flag=True,
    default=None,
    help="Decode JPEGs at reduced size (faster, not exact; never below the model's input).",
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
    "--trust-pickle",
    is_flag=True,
    default=None,
    help="Allow loading pickled torch modules (runs arbitrary code); a config's trust_pickle.",
)
@click.option("--sequential", is_flag=True, help="No worker processes or threads (reference).")
@click.option("--strict", is_flag=True, default=None, help="Exit non-zero if any item failed.")
@click.option(
    "--overwrite",
    is_flag=True,
    default=None,
    help="Replace output written under a different configuration.",
)
@click.option("--no-progress", is_flag=True)
@click.pass_context
@reports_errors
def extract_command(
    ctx,
    config_path,
    model,
    images,
    texts,
    id_column,
    text_column,
    encoding,
    output,
    layers,
    batch_size,
    runtime,
    min_cosine,
    precision,
    workers,
    output_format,
    shard_size,
    item_timeout,
    jpeg_draft,
    ort_provider,
    threads,
    trust_pickle,
    sequential,
    strict,
    overwrite,
    no_progress,
) -> None:
    """Extract features: from a Ducho config, or for one model over images or texts."""
    from ducho_fast.api import RunOptions, SingleModelJob, extract_config, extract_single

    options = RunOptions(
        runtime=runtime,
        precision=precision,
        workers=workers,
        output_format=output_format,
        strict=strict,
        overwrite=overwrite,
        shard_size=shard_size,
        item_timeout=item_timeout,
        jpeg_draft=jpeg_draft,
        ort_provider=ort_provider,
        threads=threads,
        min_cosine=min_cosine,
        trust_pickle=trust_pickle,
        pipelined=not sequential,
        progress=not no_progress,
    )
    if config_path is not None:
        results = extract_config(config_path, tuple(ctx.args), options)
    elif model is not None and output is not None:
        if ctx.args:
            raise click.UsageError(f"unexpected arguments: {ctx.args}")
        job = SingleModelJob(
            model,
            output,
            images,
            texts,
            id_column,
            text_column,
            tuple(layers),
            batch_size,
            encoding=encoding,
        )
        results = extract_single(job, options)
    else:
        raise click.UsageError(
            "give --config FILE, or --model M --output DIR with --images/--texts"
        )
    print_summary(results)


@main.command("bench")
@click.option("--model", required=True, help="Hub id, local folder or torchvision name.")
@click.option("--images", type=click.Path(path_type=Path), help="Image folder.")
@click.option("--texts", type=click.Path(path_type=Path), help="TSV/CSV of texts.")
@click.option("--id-column", default="id", show_default=True)
@click.option("--text-column", default="text", show_default=True)
@click.option("--runtimes", default="torch,onnxruntime", show_default=True)
@click.option("--precisions", default="fp32,int8", show_default=True)
@click.option("--batch-sizes", default="32", show_default=True)
@click.option("--repeats", type=int, default=3, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--limit", type=int, help="Only the first N items.")
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
    "--output",
    type=click.Path(path_type=Path),
    default=Path("benchmarks/results/local"),
    show_default=True,
)
@reports_errors
def bench_command(
    model, images, texts, id_column, text_column, runtimes, precisions, batch_sizes, repeats,
    workers, limit, weights, label, no_baseline, no_end_to_end, jpeg_draft, peers, catalogue,
    output,
) -> None:  # fmt: skip
    """Measure runtimes x precisions on the same data: pure inference, end to end, baseline."""
    from ducho_fast.bench import BenchConfig, run_bench

    config = BenchConfig(
        model=model,
        output_dir=output,
        images=images,
        texts=texts,
        id_column=id_column,
        text_column=text_column,
        runtimes=tuple(runtimes.split(",")),
        precisions=tuple(precisions.split(",")),
        batch_sizes=tuple(int(b) for b in batch_sizes.split(",")),
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
    )
    run_bench(config, log=click.echo)
    click.echo(f"wrote {output}/{config.name}.json, .md and .png")


if __name__ == "__main__":
    main()
