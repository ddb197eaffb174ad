"""Benchmark results as JSON (everything), a Markdown table and a PNG plot (matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_reports(results: dict[str, Any], folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stem = results["model"]
    paths = {
        "json": folder / f"{stem}.json",
        "markdown": folder / f"{stem}.md",
        "plot": folder / f"{stem}.png",
    }
    paths["json"].write_text(json.dumps(results, indent=2))
    paths["markdown"].write_text(markdown(results))
    plot(results, paths["plot"])
    return paths


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def spread(figures: dict[str, Any], key: str) -> str:
    """Median with the range over the repetitions: `21.1 (20.7-22.0)`."""
    low, high = figures.get(f"min_{key}"), figures.get(f"max_{key}")
    if figures.get(key) is None or low is None or high is None:
        return fmt(figures.get(key))
    return f"{fmt(figures[key])} ({fmt(low)}-{fmt(high)})"


def startup_text(figures: dict[str, Any]) -> str:
    if not figures:
        return "-"
    ready = figures.get("startup_to_first_input_s")
    done = figures.get("startup_to_first_batch_s")
    return f"{fmt(ready, 2)} / {fmt(done, 2)}"


def fidelity_text(figures: dict[str, Any]) -> str:
    cosines = [f["min_cosine"] for f in figures.get("fidelity", {}).values()]
    return f"{min(cosines):.5f}" if cosines else "-"


COLUMNS = (
    "variant",
    "pure items/s (range)",
    "% fp32 matmul peak",
    "min cos vs eager fp32",
    "end-to-end items/s (command, range)",
    "steady items/s",
    "x baseline",
    "efficiency",
    "inference waited",
    "start-up s (to first input / batch done)",
    "peak RSS MiB",
    "min cos vs baseline",
    "min cos vs first fp32 job",
)


BASELINE_LINES = (
    ("baseline", "--"),
    ("baseline-transformers", ":"),
    ("baseline-transformers-512", "-."),
)


def kind_table(kind: str, data: dict[str, Any], batch: str) -> list[str]:
    pure = data["pure_inference"][batch]["variants"]
    e2e = data.get("end_to_end", {})
    lines = [
        f"### {kind} ({data['items']} items, batch {batch})",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for name in [*pure, *(n for n in e2e if n not in pure)]:
        p, e = pure.get(name, {}), e2e.get(name, {})
        share = p.get("share_of_matmul_peak")
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    spread(p, "items_per_s"),
                    fmt(100 * share) if share is not None else "-",
                    fidelity_text(p),
                    spread(e, "command_items_per_s"),
                    fmt(e.get("steady_items_per_s")),
                    fmt(e.get("ratio_to_baseline"), 2),
                    fmt(e.get("pipeline_efficiency"), 2),
                    fmt(100 * e["inference_wait_share"]) + "%" if e else "-",
                    startup_text(e),
                    fmt(e.get("peak_rss_mib"), 0),
                    fmt(e.get("cosine_to_baseline", {}).get("min_cosine"), 5),
                    fmt(e.get("cosine_to_fp32", {}).get("min_cosine"), 5),
                ]
            )
            + " |"
        )
    for other in [n for n in e2e if n.startswith("baseline-")]:
        ratios = ", ".join(
            f"{name} {fmt(fig['ratio_to_other_baselines'][other], 2)}x"
            for name, fig in e2e.items()
            if other in fig.get("ratio_to_other_baselines", {})
        )
        lines.append(f"\nEnd to end (command) against {other}: {ratios}.")
    for prefix, against in PEER_RATIOS:
        ratios = [f"{n} {v}" for n, fig in e2e.items() if (v := versus(fig, prefix))]
        if ratios:
            lines.append(f"\n{against}: " + ", ".join(ratios) + ".")
    for name, reason in data["skipped"].items():
        lines.append(f"\nSkipped {name}: {reason}")
    if "peers" in data:
        lines += ["", *peers_table(kind, data["peers"])]
    return [*lines, ""]


# (key prefix, sentence): each ducho-fast command against the peer its ratio was taken to
PEER_RATIOS = (
    ("", "End to end (command) against the fastest peer of at least equal fidelity"),
    ("fp32_", "fp32 end to end (command) against the fastest peer computing in fp32"),
)


def versus(fig: dict[str, Any], prefix: str = "") -> str | None:
    """`1.23x (peer)` for the ratio to `fastest_<prefix>peer`, or None when not taken."""
    if f"ratio_to_fastest_{prefix}peer" not in fig:
        return None
    return f"{fmt(fig[f'ratio_to_fastest_{prefix}peer'], 2)}x ({fig[f'fastest_{prefix}peer']})"


PEER_COLUMNS = (
    "contender",
    "computes in",
    "fidelity class",
    "min cos vs eager fp32",
    "pure items/s",
    "in-memory items/s",
    "x fastest peer (equal fidelity)",
    "x fastest fp32 peer",
)


def peers_table(kind: str, peers: dict[str, Any]) -> list[str]:
    level = "in memory" if peers["level"].startswith("in_memory") else "pure"
    lines = [
        f"#### {kind}: against peers ({peers['items']} items in memory; ratios {level})",
        "",
        "| " + " | ".join(PEER_COLUMNS) + " |",
        "|" + "---|" * len(PEER_COLUMNS),
    ]
    for name, fig in peers["contenders"].items():
        cells = [
            name,
            fig.get("arithmetic", "-"),
            fig["class"],
            fmt(fig["min_cosine"], 5),
            fmt(fig["items_per_s"]),
            fmt(fig["in_memory_items_per_s"]),
            versus(fig) or "-",
            versus(fig, "fp32_") or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [f"\nPeer skipped: {name}: {why}" for name, why in peers["skipped"].items()]
    return lines


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    batch = str(results["settings"]["batch_sizes"][0])
    lines = [
        f"## {results['model']}",
        "",
        f"Machine: {machine['cpu']}, {machine['logical_cpus']} logical CPUs "
        f"({', '.join(machine['cpu_features'])}); fp32 matmul "
        f"{machine['matmul_fp32_gflops']:.0f} GFLOP/s.",
        f"Load average at start {machine['load_average_at_start'][0]:.2f}, "
        f"at end {machine['load_average_at_end'][0]:.2f}.",
        f"Medians of {results['settings']['repeats']} interleaved repetitions; "
        f"{results['settings']['workers']} decode workers.",
        "",
    ]
    for kind, data in results["kinds"].items():
        lines += kind_table(kind, data, batch)
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Bars per variant: pure inference vs end to end (command), baseline as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = str(results["settings"]["batch_sizes"][0])
    kinds = list(results["kinds"])
    figure, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4), squeeze=False)
    for axis, kind in zip(axes[0], kinds, strict=True):
        data = results["kinds"][kind]
        pure = data["pure_inference"][batch]["variants"]
        e2e = data.get("end_to_end", {})
        names = list(pure)
        positions = range(len(names))
        axis.bar(
            [p - 0.2 for p in positions],
            [pure[n]["items_per_s"] for n in names],
            width=0.4,
            label="pure inference",
        )
        axis.bar(
            [p + 0.2 for p in positions],
            [e2e.get(n, {}).get("command_items_per_s", 0.0) for n in names],
            width=0.4,
            label="end to end (command)",
        )
        for base, style in BASELINE_LINES:
            if base in e2e:
                axis.axhline(
                    e2e[base]["command_items_per_s"], color="black", linestyle=style, label=base
                )
        axis.set_xticks(list(positions), names, rotation=20)
        axis.set_ylabel("items/s")
        axis.set_title(f"{results['model']} {kind} ({data['items']} items)")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
