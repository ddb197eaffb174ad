"""`run_bench`: pure inference, end to end and the Ducho-style baseline, measured in one run."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ducho_fast.bench.config import BenchConfig, Variant, bench_items
from ducho_fast.bench.inference import Prepared, measure_inference, prepare, preprocess_key, run_all
from ducho_fast.bench.machine import flops_per_item, machine_info, matmul_gflops
from ducho_fast.bench.peer_run import EXACT, GATED, compare_with_peers
from ducho_fast.core.errors import DuchoFastError
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.core.records import Item
from ducho_fast.modalities import modality
from ducho_fast.models.spec import ModelRef
from ducho_fast.resolve import OpenModel, open_model
from ducho_fast.runtime.table import RuntimeChoice, runtime_spec

Log = Callable[[str], None]


def unavailable(variant: Variant) -> str | None:
    """Why this machine cannot run a variant, or None (opening it may still fail: recorded)."""
    spec = runtime_spec(variant.runtime)
    if variant.precision not in spec.precisions:
        return f"{variant.runtime} runs {'/'.join(spec.precisions)}, not {variant.precision}"
    if variant.runtime == "tensorrt":
        from ducho_fast.runtime.tensorrt_build import gpu_info, import_tensorrt

        try:
            import_tensorrt()
            gpu_info()
        except DuchoFastError as exc:
            return str(exc)
    return None


def bench_ref(config: BenchConfig, kind: str) -> ModelRef:
    return ModelRef(
        config.model,
        task=kind,  # type: ignore[arg-type]
        weights=config.weights,
        trust_pickle=config.trust_pickle,
    )


def open_variants(
    config: BenchConfig, kind: str, cache: Path, log: Log, items: Sequence[Item] = ()
) -> tuple[dict[str, OpenModel], dict[str, str]]:
    """Every variant this machine can open; exports made here validate (and calibrate static
    int8) on a spread of the benchmark's items, as an extraction's exports do."""
    ref = bench_ref(config, kind)
    sample = modality(kind).export_sample(items)
    opened, skipped = {}, {}
    for variant in config.variants:
        reason = unavailable(variant)
        if reason is None:
            log(f"  opening {variant.name} (exports on first use)")
            choice = RuntimeChoice(variant.runtime, variant.precision, cache_dir=cache)  # type: ignore[arg-type]
            try:
                opened[variant.name] = open_model(ref, kind, choice, 0, sample)
            except DuchoFastError as exc:
                reason = f"{type(exc).__name__}: {exc}"
        if reason is not None:
            skipped[variant.name] = reason
            log(f"  skipping {variant.name}: {reason}")
    return opened, skipped


def pure_inference(
    config: BenchConfig,
    reference: OpenModel,
    opened: dict[str, OpenModel],
    items: Sequence[Item],
    peak_gflops: float,
) -> dict[str, Any]:
    per_batch: dict[str, Any] = {}
    for batch_size in config.batch_sizes:
        cache: dict[str, Prepared] = {}
        prepared = {}
        for name, model in {"reference": reference, **opened}.items():
            key = preprocess_key(model)
            if key not in cache:
                cache[key] = prepare(model, items, batch_size)
            prepared[name] = cache[key]
        ref_outputs = run_all(reference, prepared["reference"])
        figures = measure_inference(opened, prepared, ref_outputs, config.repeats)
        first = prepared["reference"].batches[0]
        flops = flops_per_item(
            reference.session.module,  # type: ignore[attr-defined]
            first,
            reference.session.input_names,
        )
        for fig in figures.values():
            achieved = flops * fig["items_per_s"] / 1e9
            fig["gflops"] = achieved
            fig["share_of_matmul_peak"] = achieved / peak_gflops
        per_batch[str(batch_size)] = {"flops_per_item": flops, "variants": figures}
    return per_batch


def launch(spec: dict, cache: Path) -> dict[str, Any]:
    """Run one end-to-end job in a new interpreter; command time includes its start-up."""
    env = {**os.environ, "DUCHO_FAST_CACHE": str(cache)}
    launched = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "ducho_fast.bench.worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    finished = time.time()
    if done.returncode != 0:
        raise DuchoFastError(f"{spec['mode']} run failed:\n{done.stderr[-2000:]}")
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    metrics["command_seconds"] = finished - launched
    metrics["command_items_per_s"] = metrics["items"] / (finished - launched)
    first = metrics.get("first_batch_unix")
    ready = metrics.get("first_input_unix")
    metrics["startup_to_first_batch_s"] = first - launched if first else None
    metrics["startup_to_first_input_s"] = ready - launched if ready else None
    return metrics


def read_outputs(folder: Path) -> dict[str, np.ndarray]:
    """Features by id from a compact folder (features.npy + ids.txt) or per-item .npy files."""
    compact = next(folder.rglob("features.npy"), None)
    if compact is not None:
        ids = (compact.parent / "ids.txt").read_text().splitlines()
        return dict(zip(ids, np.load(compact), strict=True))
    return {p.stem: np.load(p).reshape(-1) for p in folder.rglob("*.npy")}


def cosine_by_id(reference: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict:
    common = sorted(set(reference) & set(other))
    if not common:
        return {"items": 0}
    cosines = row_cosines(
        np.stack([reference[i] for i in common]), np.stack([other[i] for i in common])
    )
    return {"items": len(common), "min_cosine": float(cosines.min()), "mean": float(cosines.mean())}


def folder_name(job: str) -> str:
    return job.replace(":", "-").replace("+", "-")


def end_to_end(
    config: BenchConfig,
    kind: str,
    names: Sequence[str],
    work: Path,
    cache: Path,
    log: Log,
    peers: Sequence[str] = (),
) -> dict[str, Any]:
    """Each variant, peer and baseline as a fresh command, interleaved over the repetitions."""
    data = tiled_data(config, kind, work / "catalogue") if config.catalogue else config
    base = {
        "kind": kind,
        "model": config.model,
        "images": str(data.images),
        "texts": str(data.texts),
        "id_column": config.id_column,
        "text_column": config.text_column,
        "batch_size": config.batch_sizes[0],
        "workers": config.workers,
        "weights": config.weights,
        "trust_pickle": config.trust_pickle,
        "limit": None if config.catalogue else config.limit,
        "threads": config.threads,
    }
    jobs: dict[str, dict] = {}
    for name in names:
        runtime, precision = name.split(":")
        jobs[name] = {**base, "mode": "ducho-fast", "runtime": runtime, "precision": precision}
        jobs.update(ray_jobs(config, name, jobs[name]))
        if config.jpeg_draft and kind == "image" and runtime_spec(runtime).needs_artifact:
            jobs[f"{name}+jpeg-draft"] = {**jobs[name], "jpeg_draft": True}
    for peer in peers:
        jobs[f"peer {peer}"] = {**base, "mode": "peer", "peer": peer, "work": str(work / "peers")}
    if config.baseline:
        jobs["baseline"] = {**base, "mode": "ducho"}
        if kind == "text" and (Path(config.model) / "modules.json").is_file():
            jobs["baseline-transformers"] = {**base, "mode": "ducho-transformers-text"}
            jobs["baseline-transformers-512"] = {**base, "mode": "ducho-transformers-text-512"}
    if config.end_to_end_jobs is not None:
        jobs = {name: spec for name, spec in jobs.items() if name in config.end_to_end_jobs}
    runs: dict[str, list[dict]] = {name: [] for name in jobs}
    for repeat in range(config.repeats):
        for name, spec in jobs.items():
            output = work / f"e2e-{kind}-{folder_name(name)}-{repeat}"
            log(f"  end to end {name} ({repeat + 1}/{config.repeats})")
            runs[name].append(launch({**spec, "output": str(output)}, cache))
    result = {name: summarize_runs(values) for name, values in runs.items()}
    add_cosines(result, kind, work)
    return result


def add_cosines(result: dict[str, Any], kind: str, work: Path) -> None:
    """Each job's files against the baseline's and against ducho-fast's first fp32 job's."""

    def outputs(name: str) -> dict[str, np.ndarray]:
        return read_outputs(work / f"e2e-{kind}-{folder_name(name)}-0")

    references = {"cosine_to_baseline": "baseline" if "baseline" in result else None}
    references["cosine_to_fp32"] = next((n for n in result if n.endswith(":fp32")), None)
    for key, reference_name in references.items():
        if reference_name is None:
            continue
        reference = outputs(reference_name)
        for name in result:
            if not name.startswith("baseline"):  # other baselines save other outputs
                result[name][key] = cosine_by_id(reference, outputs(name))


def ray_jobs(config: BenchConfig, name: str, local: dict) -> dict[str, dict]:
    """The Ray engine's runs of one variant (`name@ray<actors>`), beside its local run."""
    if config.engine != "ray":
        return {}
    counts: tuple[int | None, ...] = config.ray_workers or (None,)
    return {
        f"{name}@ray{count or ''}": {**local, "engine": "ray", "ray_workers": count}
        for count in counts
    }


def tiled_data(config: BenchConfig, kind: str, folder: Path) -> BenchConfig:
    """The data set repeated to `config.catalogue` items (ids suffixed `-k`): a catalogue-sized
    job from the data at hand. Images are symbolic links, so the page cache serves repeats."""
    assert config.catalogue is not None
    items = bench_items(
        kind, config.images, config.texts, config.id_column, config.text_column, config.limit
    )
    if not items:
        raise DuchoFastError(f"no {kind} items to tile into a catalogue")
    folder.mkdir(parents=True, exist_ok=True)
    copies = [(items[i % len(items)], i // len(items)) for i in range(config.catalogue)]
    if kind == "image":
        images = folder / "images"
        images.mkdir(exist_ok=True)
        for item, k in copies:
            source = Path(item.path)
            link = images / f"{item.item_id}-{k}{source.suffix}"
            if not link.exists():
                link.symlink_to(source.resolve())
        return replace(config, images=images)
    table = folder / "texts.tsv"
    rows = [f"{config.id_column}\t{config.text_column}"]
    rows += [f"{item.item_id}-{k}\t{clean_cell(item.text or '')}" for item, k in copies]
    table.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return replace(config, texts=table)


def clean_cell(text: str) -> str:
    """One TSV cell: no tabs or line breaks, no quote that a reader could take as quoting."""
    return " ".join(text.replace('"', "'").split())


def summarize_runs(runs: list[dict]) -> dict[str, Any]:
    """Median figures over repetitions; the per-stage split of the median run."""
    key = "command_items_per_s"
    median = statistics.median(r[key] for r in runs)
    typical = min(runs, key=lambda r: abs(r[key] - median))
    return {
        "items": typical["items"],
        "command_items_per_s": median,
        "min_command_items_per_s": min(r[key] for r in runs),
        "max_command_items_per_s": max(r[key] for r in runs),
        "steady_items_per_s": steady_rate(runs),
        "startup_to_first_batch_s": median_of(runs, "startup_to_first_batch_s"),
        "startup_to_first_input_s": median_of(runs, "startup_to_first_input_s"),
        "stage_seconds": typical["stage_seconds"],
        "inference_wait_share": typical["inference_wait_share"],
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "peak_worker_rss_mib": max(r["peak_worker_rss_mib"] for r in runs),
        "runs": runs,
    }


def median_of(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key)]
    return statistics.median(values) if values else None


def steady_rate(runs: list[dict]) -> float | None:
    """Median items/s after the first batch; None when every item came in the first batch."""
    rates = [r["items_per_s_after_startup"] for r in runs if r["items_per_s_after_startup"] > 0]
    return statistics.median(rates) if rates else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def add_ratios(result: dict[str, Any], batch_size: int) -> None:
    """Pipeline efficiency and ratios to the baseline, from figures of the same run."""
    pure = result["pure_inference"][str(batch_size)]["variants"]
    e2e = result["end_to_end"]
    base = e2e.get("baseline")
    others = [n for n in e2e if n.startswith("baseline-")]
    for name, fig in e2e.items():
        variant = name.split("+")[0].split("@")[0]
        if "@ray" in name and variant in e2e:  # the Ray engine over the same local run
            fig["ratio_to_local"] = ratio(
                fig["command_items_per_s"], e2e[variant]["command_items_per_s"]
            )
            fig["steady_ratio_to_local"] = ratio(
                fig["steady_items_per_s"], e2e[variant]["steady_items_per_s"]
            )
        if variant in pure:
            fig["pipeline_efficiency"] = ratio(
                fig["steady_items_per_s"], pure[variant]["items_per_s"]
            )
        if base is not None:
            fig["ratio_to_baseline"] = ratio(
                fig["command_items_per_s"], base["command_items_per_s"]
            )
            fig["steady_ratio_to_baseline"] = ratio(
                fig["steady_items_per_s"], base["steady_items_per_s"]
            )
        if others and not name.startswith("baseline"):
            fig["ratio_to_other_baselines"] = {
                other: ratio(fig["command_items_per_s"], e2e[other]["command_items_per_s"])
                for other in others
            }
    contenders = result.get("peers", {}).get("contenders", {})
    add_e2e_peer_ratios(
        e2e, {f"peer {n}": f.get("arithmetic", "fp32") for n, f in contenders.items()}
    )


def add_e2e_peer_ratios(e2e: dict[str, Any], peer_arithmetic: dict[str, str]) -> None:
    """Each ducho-fast command over the fastest peer command of at least its fidelity class
    (cosine to ducho-fast's first fp32 job's files), and fp32 commands over the fastest exact
    peer command computing in fp32 too."""
    peers = [n for n in e2e if n.startswith("peer ")]

    def worst(name: str) -> float:
        return e2e[name].get("cosine_to_fp32", {}).get("min_cosine", -1.0)

    def fastest(eligible: list[str]) -> str | None:
        return max(eligible, key=lambda p: e2e[p]["command_items_per_s"], default=None)

    for name, fig in e2e.items():
        if name in peers or name.startswith("baseline") or worst(name) < GATED:
            continue
        floor = EXACT if worst(name) >= EXACT else GATED
        best = fastest([p for p in peers if worst(p) >= floor])
        if best is not None:
            fig["fastest_peer"] = best
            fig["ratio_to_fastest_peer"] = ratio(
                fig["command_items_per_s"], e2e[best]["command_items_per_s"]
            )
        fp32_peers = [p for p in peers if worst(p) >= EXACT and peer_arithmetic.get(p) == "fp32"]
        best_fp32 = fastest(fp32_peers)
        if name.split("+")[0].endswith(":fp32") and best_fp32 is not None:
            fig["fastest_fp32_peer"] = best_fp32
            fig["ratio_to_fastest_fp32_peer"] = ratio(
                fig["command_items_per_s"], e2e[best_fp32]["command_items_per_s"]
            )


def bench_kind(
    config: BenchConfig, kind: str, work: Path, cache: Path, peak: float, log: Log
) -> dict[str, Any]:
    items = bench_items(
        kind, config.images, config.texts, config.id_column, config.text_column, config.limit
    )
    log(f"{config.name} {kind}: {len(items)} items")
    opened, skipped = open_variants(config, kind, cache, log, items)
    reference = opened.get("torch:fp32") or open_model(  # fp32 eager: the fidelity reference
        bench_ref(config, kind),
        kind,
        RuntimeChoice("torch", "fp32", cache_dir=cache),
    )
    result: dict[str, Any] = {"items": len(items), "skipped": skipped}
    log("  pure inference")
    result["pure_inference"] = pure_inference(config, reference, opened, items, peak)
    peers: list[str] = []
    if config.with_peers:
        log("  against peers")
        result["peers"] = compare_with_peers(
            config, kind, items, reference, opened, work / "peers", log
        )
        peers = [n for n in result["peers"]["contenders"] if not n.startswith("ducho-fast ")]
    if config.end_to_end:
        result["end_to_end"] = end_to_end(config, kind, list(opened), work, cache, log, peers)
        add_ratios(result, config.batch_sizes[0])
    return result


def require_extras() -> None:
    """Fail before minutes of measuring, not after, when the plotting/memory extras are absent."""
    import importlib.util

    missing = [m for m in ("matplotlib", "psutil") if importlib.util.find_spec(m) is None]
    if missing:
        raise DuchoFastError(f"ducho-fast bench needs {missing}: pip install 'ducho-fast[bench]'")


def run_bench(config: BenchConfig, log: Log = print) -> dict[str, Any]:
    """Measure every runnable variant of `config`; returns the results (see `report`)."""
    from ducho_fast.bench.report import write_reports

    require_extras()
    started = time.time()
    results: dict[str, Any] = {
        "model": config.name,
        "source": config.model,
        "settings": {
            "runtimes": list(config.runtimes),
            "precisions": list(config.precisions),
            "batch_sizes": list(config.batch_sizes),
            "repeats": config.repeats,
            "workers": config.workers,
            "limit": config.limit,
            "peers": list(config.peers) if config.peers is not None else None,
            "catalogue": config.catalogue,
            "engine": config.engine,
            "ray_workers": list(config.ray_workers),
            "threads": config.threads,
        },
        "machine": machine_info(),
    }
    ceiling = matmul_gflops()
    results["machine"]["matmul_fp32_gflops"] = ceiling["best"]
    results["machine"]["matmul_fp32_gflops_by_library"] = ceiling
    with tempfile.TemporaryDirectory(prefix="ducho-fast-bench-") as tmp:
        work, cache = Path(tmp), Path(tmp) / "cache"
        results["kinds"] = {
            kind: bench_kind(
                config, kind, work, cache, results["machine"]["matmul_fp32_gflops"], log
            )
            for kind in config.kinds
        }
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["seconds"] = time.time() - started
    write_reports(results, config.output_dir)
    return results
