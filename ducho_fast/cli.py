"""The `ducho-fast` command: thin adapters that build a config and call the library."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import click

from .errors import DuchoFastError

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
    "--precision", type=click.Choice(["fp32", "fp16", "int8"]), default="fp32", show_default=True
)
@click.option(
    "--int8-mode",
    type=click.Choice(["auto", "dynamic-per-tensor", "dynamic-per-channel", "static"]),
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
    from .export.api import ExportConfig, Sample, export
    from .export.onnx_export import DEFAULT_OPSET
    from .models.spec import ModelRef

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
    from .export.manifest import read_manifest

    manifest = read_manifest(folder)
    for graph in manifest.graphs:
        worst = graph.validation[graph.precision]
        click.echo(
            f"{graph.name}: {graph.file} ({graph.precision}"
            f"{', ' + graph.quantization if graph.quantization else ''}) "
            f"validated: min cosine {worst['min_cosine']:.6f}, max-abs {worst['max_abs']:.3g}"
        )
    click.echo(f"artifact written to {folder}")


if __name__ == "__main__":
    main()
