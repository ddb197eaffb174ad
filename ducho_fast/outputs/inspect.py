"""`ducho-fast inspect DIR`: what a run wrote, from its files alone, in any layout the tool
writes. Per output: layouts, model, layer, count, dimension, the run's fingerprint (a short
hash of it), its timings; failures by stage (every `failures.tsv`); the nearest neighbours
of a few items (cosine) as a sanity check; and, when asked, a PNG map of the items (the
first two principal components), coloured by a column of the user's table."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ducho_fast.core.errors import ConfigError
from ducho_fast.outputs.read import FeatureSet, find_outputs, read_column, read_output

MAP_POINTS = 5000  # at most this many items on the map (a seeded sample beyond)
MAP_COLOURS = 8  # the most frequent values get a colour each, the rest are "other"


@dataclass(frozen=True)
class InspectOptions:
    neighbours: int = 3  # items whose nearest neighbours are shown
    top: int = 5  # neighbours per item
    map_path: Path | None = None  # a PNG map of the items when given
    table: Path | None = None  # the user's item table, to colour the map
    id_column: str = "id"
    colour_column: str | None = None
    select: str | None = None  # which output (a part of its folder) for neighbours and map


@dataclass(frozen=True)
class OutputSummary:
    folder: Path
    layouts: tuple[str, ...]
    model: str
    layer: str
    count: int
    dim: int
    fingerprint: str  # a short hash of the run's fingerprint; "-" when none is recorded
    timings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Neighbours:
    item: str
    nearest: tuple[tuple[str, float], ...]  # (id, cosine), best first


@dataclass(frozen=True)
class Inspection:
    root: Path
    outputs: tuple[OutputSummary, ...]
    failures: dict[str, Counter]  # failures.tsv path -> stage -> count
    inspected: Path | None  # the output the neighbours and the map are of
    neighbours: tuple[Neighbours, ...]
    map_path: Path | None


def short_hash(value: object) -> str:
    if not value:
        return "-"
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def timings(meta: dict) -> dict:
    metrics = meta.get("metrics") or {}
    keep = ("wall_seconds", "startup_seconds", "items_per_s_after_startup", "stage_seconds")
    return {key: metrics[key] for key in keep if key in metrics}


def summarise(folder: Path, layouts: list[str]) -> tuple[OutputSummary, FeatureSet]:
    features = read_output(folder, layouts[0])
    meta = features.meta
    summary = OutputSummary(
        folder,
        tuple(layouts),
        meta.get("model") or folder.parent.name,
        meta.get("layer") or folder.name,
        len(features.ids),
        features.dim,
        short_hash(meta.get("fingerprint")),
        timings(meta),
    )
    return summary, features


def failures_by_stage(root: Path) -> dict[str, Counter]:
    counts = {}
    for path in sorted(root.rglob("failures.tsv")):
        with path.open() as handle:
            counts[str(path)] = Counter(
                row["stage"] for row in csv.DictReader(handle, delimiter="\t")
            )
    return counts


def nearest(features: FeatureSet, count: int, top: int) -> tuple[Neighbours, ...]:
    """The `top` nearest items (cosine) of `count` items spread over the output."""
    rows = features.features
    if len(rows) < 2 or count <= 0:
        return ()
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    picks = np.unique(np.linspace(0, len(rows) - 1, min(count, len(rows))).astype(int))
    found = []
    for pick in picks:
        scores = unit @ unit[pick]
        scores[pick] = -np.inf
        best = np.argsort(-scores)[: min(top, len(rows) - 1)]
        found.append(
            Neighbours(features.ids[pick], tuple((features.ids[b], float(scores[b])) for b in best))
        )
    return tuple(found)


def project(rows: np.ndarray) -> np.ndarray:
    """The first two principal components (PCA by SVD of the centred rows)."""
    centred = rows - rows.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    return centred @ axes[:2].T


def draw_map(features: FeatureSet, path: Path, labels: dict[str, str] | None, title: str) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("the map needs matplotlib: pip install ducho-fast[inspect]") from None
    rng = np.random.default_rng(0)
    keep = np.arange(len(features.ids))
    if len(keep) > MAP_POINTS:
        keep = np.sort(rng.choice(keep, MAP_POINTS, replace=False))
    points = project(features.features[keep])
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=90)
    values = [labels.get(features.ids[k], "(not in table)") for k in keep] if labels else None
    if values is None:
        axes.scatter(points[:, 0], points[:, 1], s=6, alpha=0.6, linewidths=0)
    else:
        common = [v for v, _ in Counter(values).most_common(MAP_COLOURS)]
        groups = [*common, "other"]
        for n, group in enumerate(groups):
            where = [i for i, v in enumerate(values) if (v if v in common else "other") == group]
            if where:
                colour = "lightgrey" if group == "other" else plt.get_cmap("tab10")(n)
                axes.scatter(
                    *points[where].T, s=6, alpha=0.7, linewidths=0, color=colour, label=group
                )
        axes.legend(fontsize=7, markerscale=2, loc="best", frameon=False)
    axes.set_title(title, fontsize=9)
    axes.set_xlabel("PC 1", fontsize=8)
    axes.set_ylabel("PC 2", fontsize=8)
    axes.tick_params(labelsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def inspect_run(root: Path, options: InspectOptions = InspectOptions()) -> Inspection:
    by_folder: dict[Path, list[str]] = {}
    for folder, kind in find_outputs(root):
        by_folder.setdefault(folder, []).append(kind)
    if not by_folder:
        raise ConfigError(f"{root} holds no output of ducho-fast (compact, parquet or Ducho's)")
    summaries, sets = [], {}
    for folder, layouts in by_folder.items():
        summary, features = summarise(folder, layouts)
        summaries.append(summary)
        sets[folder] = features
    chosen = pick(sets, options.select)
    features = sets[chosen]
    drawn = None
    if options.map_path is not None:
        labels = None
        if options.table is not None:
            if options.colour_column is None:
                raise ConfigError("--table needs --colour-column (the column to colour by)")
            labels = read_column(options.table, options.id_column, options.colour_column)
        title = f"{chosen.parent.name}/{chosen.name}: {len(features.ids)} items"
        drawn = draw_map(features, options.map_path, labels, title)
    return Inspection(
        root,
        tuple(summaries),
        failures_by_stage(root),
        chosen,
        nearest(features, options.neighbours, options.top),
        drawn,
    )


def pick(sets: dict[Path, FeatureSet], select: str | None) -> Path:
    """The output for neighbours and the map: the one whose folder contains `select`, else
    the first in ducho-fast's own layout (the first of all if there is none)."""
    folders = list(sets)
    if select is not None:
        matches = [f for f in folders if select in str(f)]
        if len(matches) != 1:
            raise ConfigError(
                f"--select {select!r} matches {len(matches)} outputs; outputs: "
                + ", ".join(str(f) for f in folders)
            )
        return matches[0]
    fast = [f for f in folders if sets[f].kind != "ducho"]
    return (fast or folders)[0]


def report(inspection: Inspection) -> list[str]:
    """The inspection as lines of text (the CLI prints them)."""
    lines = [f"{inspection.root}: {len(inspection.outputs)} output(s)"]
    for o in inspection.outputs:
        where = o.folder.relative_to(inspection.root) if o.folder != inspection.root else "."
        lines.append(
            f"  {where}  [{', '.join(o.layouts)}]  model {o.model}  layer {o.layer}  "
            f"{o.count} items x {o.dim}  fingerprint {o.fingerprint}"
        )
        if o.timings:
            stages = o.timings.get("stage_seconds", {})
            staged = ", ".join(f"{k} {v:.2f}s" for k, v in stages.items())
            rate = o.timings.get("items_per_s_after_startup")
            lines.append(
                f"    wall {o.timings.get('wall_seconds', 0):.1f}s"
                + (f", {rate:.1f} items/s after start-up" if rate else "")
                + (f"; {staged}" if staged else "")
            )
    if not inspection.failures:
        lines.append("failures: no failures.tsv")
    for path, stages in inspection.failures.items():
        counted = ", ".join(f"{stage} {n}" for stage, n in sorted(stages.items())) or "none"
        lines.append(f"failures ({path}): {counted}")
    if inspection.neighbours:
        lines.append(f"nearest neighbours (cosine) in {inspection.inspected}:")
        for n in inspection.neighbours:
            near = ", ".join(f"{i} {s:.3f}" for i, s in n.nearest)
            lines.append(f"  {n.item}: {near}")
    if inspection.map_path is not None:
        lines.append(f"map: {inspection.map_path}")
    return lines
