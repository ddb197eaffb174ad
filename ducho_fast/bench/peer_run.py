"""ducho-fast against its peers (`bench.peers`), in one process, interleaved.

Every contender, ducho-fast's variants and the peers alike, gets the same payloads: the data
set's texts, or its images decoded once into memory. Two figures each:
- **pure**: `infer` only, on inputs each side prepared beforehand (pixels from its own
  processor); text peers tokenize inside `infer`, as their API does;
- **in memory**: `prepare` + `infer`, from texts or decoded images to features (tokenisation and
  resizing included on every side): the fair level for text.
Ratios compare each ducho-fast variant with the fastest peer of at least its fidelity class
(exact: min cosine >= 0.9999 to fp32 eager; gated: >= 0.99), at the level fair for the kind;
fp32 variants also with the fastest peer that computes in fp32 too (a bf16 run can reach
0.9999, so the fidelity class alone would pit fp32 against bf16).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ducho_fast.bench.peers import PEERS, PeerModel, missing, peers_for
from ducho_fast.core.errors import DuchoFastError
from ducho_fast.core.fidelity import row_cosines
from ducho_fast.core.image import decode_image
from ducho_fast.core.records import Item
from ducho_fast.resolve import OpenModel

Log = Callable[[str], None]
EXACT, GATED = 0.9999, 0.99
FAIR_LEVEL = {"text": "in_memory_items_per_s", "image": "items_per_s"}


def payloads(kind: str, items: Sequence[Item]) -> list[Any]:
    """Texts, or images decoded once (items that fail to decode are left out)."""
    if kind == "text":
        return [item.text or "" for item in items]
    decoded = []
    for item in items:
        try:
            decoded.append(decode_image(item.path))
        except Exception:
            continue
    return decoded


def ducho_contender(opened: OpenModel, batch_size: int, arithmetic: str = "fp32") -> PeerModel:
    """A ducho-fast variant in a peer's shape: the modality's in-memory batcher + session."""
    name = opened.output_names[0]

    def prepare(values: Sequence[Any]) -> list[Any]:
        return list(opened.modality.encode_batches(opened.feed, values, batch_size))

    def infer(batches: list[Any]) -> np.ndarray:
        rows = {}
        for positions, inputs in batches:
            for position, row in zip(positions, opened.session.run(inputs)[name], strict=True):
                rows[int(position)] = row.reshape(-1)
        return np.stack([rows[i] for i in range(len(rows))]).astype(np.float32)

    return PeerModel(prepare=prepare, infer=infer, arithmetic=arithmetic)


def variant_arithmetic(variant: str) -> str:
    """`runtime:precision` -> the precision it computes in (fp32, bf16, fp16, int8)."""
    return variant.split(":")[-1]


def open_peers(
    model: str, kind: str, names: Sequence[str], batch_size: int, work: Path, log: Log
) -> tuple[dict[str, PeerModel], dict[str, str]]:
    wanted = [PEERS.lookup(n) for n in names] if names else peers_for(model, kind)
    opened, skipped = {}, {}
    for peer in wanted:
        if peer.kind != kind or not peer.fits(model):
            continue
        absent = missing(peer)
        if absent:
            skipped[peer.name] = f"needs {absent}: pip install 'ducho-fast[peers]'"
            continue
        log(f"  opening peer {peer.name}")
        try:
            opened[peer.name] = peer.open(model, batch_size, work)
        except Exception as exc:
            skipped[peer.name] = f"{type(exc).__name__}: {str(exc)[:300]}"
        if peer.name in skipped:
            log(f"  skipping peer {peer.name}: {skipped[peer.name]}")
    return opened, skipped


def fidelity_class(min_cosine: float) -> str:
    return "exact" if min_cosine >= EXACT else "gated" if min_cosine >= GATED else "below gate"


def measure(
    contenders: dict[str, PeerModel], values: Sequence[Any], reference: np.ndarray, repeats: int
) -> dict[str, dict[str, Any]]:
    """Fidelity from a warm-up pass, then timed passes taking turns in each repetition."""
    figures: dict[str, dict[str, Any]] = {}
    for name, model in contenders.items():
        cosines = row_cosines(reference, model.infer(model.prepare(values)))
        figures[name] = {
            "min_cosine": float(cosines.min()),
            "mean_cosine": float(cosines.mean()),
            "class": fidelity_class(float(cosines.min())),
            "arithmetic": model.arithmetic,
        }
    pure: dict[str, list[float]] = {n: [] for n in contenders}
    whole: dict[str, list[float]] = {n: [] for n in contenders}
    for _ in range(repeats):
        for name, model in contenders.items():
            start = time.perf_counter()
            prepared = model.prepare(values)
            ready = time.perf_counter()
            model.infer(prepared)
            done = time.perf_counter()
            pure[name].append(done - ready)
            whole[name].append(done - start)
    for name, fig in figures.items():
        fig["items_per_s"] = len(values) / statistics.median(pure[name])
        fig["in_memory_items_per_s"] = len(values) / statistics.median(whole[name])
        fig["seconds"] = {"pure": pure[name], "in_memory": whole[name]}
    return figures


def fastest_peer(
    figures: dict[str, dict], peers: Sequence[str], floor: float, level: str, fp32: bool = False
):
    eligible = [
        p
        for p in peers
        if figures[p]["min_cosine"] >= floor and (not fp32 or figures[p]["arithmetic"] == "fp32")
    ]
    return max(eligible, key=lambda p: figures[p][level], default=None)


def add_peer_ratios(figures: dict[str, dict], peers: Sequence[str], kind: str) -> None:
    """Each ducho-fast variant over the fastest peer at least as faithful as its class, and
    fp32 variants over the fastest exact peer computing in fp32 too."""
    level = FAIR_LEVEL[kind]
    for name, fig in figures.items():
        if name in peers or fig["class"] == "below gate":
            continue
        floor = EXACT if fig["class"] == "exact" else GATED
        best = fastest_peer(figures, peers, floor, level)
        if best is not None:
            fig["fastest_peer"] = best
            fig["ratio_to_fastest_peer"] = fig[level] / figures[best][level]
        best_fp32 = fastest_peer(figures, peers, EXACT, level, fp32=True)
        if fig["arithmetic"] == "fp32" and best_fp32 is not None:
            fig["fastest_fp32_peer"] = best_fp32
            fig["ratio_to_fastest_fp32_peer"] = fig[level] / figures[best_fp32][level]


def compare_with_peers(
    config: Any,
    kind: str,
    items: Sequence[Item],
    reference: OpenModel,
    opened: dict[str, OpenModel],
    work: Path,
    log: Log,
) -> dict[str, Any]:
    """The peers section of a kind's results."""
    batch_size = config.batch_sizes[0]
    values = payloads(kind, items)
    if not values:
        raise DuchoFastError(f"no {kind} of the data set could be read for the peers run")
    peers, skipped = open_peers(config.model, kind, config.peers, batch_size, work, log)
    contenders = {
        **{
            f"ducho-fast {n}": ducho_contender(m, batch_size, variant_arithmetic(n))
            for n, m in opened.items()
        },
        **peers,
    }
    reference_rows = ducho_contender(reference, batch_size)
    log(f"  peers: {', '.join(peers) or 'none'} on {len(values)} {kind}s")
    figures = measure(
        contenders, values, reference_rows.infer(reference_rows.prepare(values)), config.repeats
    )
    add_peer_ratios(figures, list(peers), kind)
    return {
        "items": len(values),
        "level": FAIR_LEVEL[kind],
        "contenders": figures,
        "skipped": skipped,
    }
