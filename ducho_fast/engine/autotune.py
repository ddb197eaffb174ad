"""`--runtime auto` / `--precision auto`: the fastest runtime x precision that keeps fidelity.

Every candidate available here (ONNX Runtime fp32/int8, OpenVINO fp32/bf16, ...) is opened on
the model's artifact, timed on batches like the run's, and compared with fp32 on the
modality's artifact cases (and the run's own sample). The fastest whose minimum cosine to fp32
reaches the floor (`min_cosine`, 0.99 by default) wins. The choice is remembered per model,
modality, candidate set, floor, threads and CPU, like the batch-size sweep, so only the first
run pays for it; the run summary prints the choice and the figures behind it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ducho_fast.core.errors import DuchoFastError
from ducho_fast.core.fidelity import worst_cosine
from ducho_fast.core.io import atomic_json
from ducho_fast.core.machine import machine_key
from ducho_fast.core.records import Item
from ducho_fast.engine.batch_sweep import items_per_second
from ducho_fast.modalities import Sample, modality
from ducho_fast.models.spec import ModelRef
from ducho_fast.resolve import cache_key, open_model
from ducho_fast.runtime.table import RUNTIMES, RuntimeChoice

AUTO = "auto"
TIMING_BATCH = 32
CACHE_FILE = "runtime-choices.json"
GPU_PRECISIONS = ("fp16",)  # chosen explicitly: slow on CPUs, so never picked by auto here


@dataclass(frozen=True)
class AutoPick:
    """What is left to measurement: the runtime, the precision or both (None)."""

    runtime: str | None = None
    precision: str | None = None
    min_cosine: float = 0.99

    def candidates(self) -> list[tuple[str, str]]:
        specs = [RUNTIMES.lookup(self.runtime)] if self.runtime else list(RUNTIMES.values())
        found = []
        for spec in specs:
            if not spec.needs_artifact or spec.unavailable() is not None:
                continue  # eager runtimes import torch and load the model: chosen explicitly
            precisions = [self.precision] if self.precision else spec.precisions
            found += [
                (spec.name, precision)
                for precision in precisions
                if precision in spec.precisions and precision not in GPU_PRECISIONS
            ]
        return found


def planned_choice(
    runtime: str, precision: str, min_cosine: float = 0.99, **settings: Any
) -> tuple[RuntimeChoice, AutoPick | None]:
    """A concrete choice, or (when either is `auto`) a base choice and what to measure."""
    if AUTO not in (runtime, precision):
        return RuntimeChoice(runtime, precision, **settings), None
    pick = AutoPick(
        None if runtime == AUTO else runtime, None if precision == AUTO else precision, min_cosine
    )
    base_runtime = "onnxruntime" if runtime == AUTO else runtime
    return RuntimeChoice(base_runtime, "fp32", **settings), pick


@dataclass(frozen=True)
class Measured:
    runtime: str
    precision: str
    items_per_s: float | None
    min_cosine: float | None
    skipped: str | None = None

    def describe(self) -> str:
        if self.skipped is not None:
            return f"{self.runtime} {self.precision}: skipped ({self.skipped})"
        return (
            f"{self.runtime} {self.precision}: {self.items_per_s:.1f} items/s, "
            f"min cosine {self.min_cosine:.5f}"
        )


def auto_choice(
    ref: ModelRef, kind: str, base: RuntimeChoice, pick: AutoPick, items: list[Item]
) -> tuple[RuntimeChoice, str]:
    """The measured choice (or the remembered one) and a line saying why."""
    candidates = pick.candidates()
    if not candidates:
        raise DuchoFastError(f"no runtime here can run {pick.precision or 'any precision'}")
    key = choice_key(ref, kind, base, pick, candidates)
    remembered = read_choices(base.cache).get(key)
    if remembered is not None:
        chosen = replace(base, runtime=remembered["runtime"], precision=remembered["precision"])
        return chosen, f"{remembered['describe']} (remembered)"
    measured = measure(ref, kind, base, pick, candidates, items)
    passing = [m for m in measured if m.skipped is None and m.min_cosine >= pick.min_cosine]
    # (NaN never passes: `nan >= floor` is False.)
    if not passing:
        figures = "; ".join(m.describe() for m in measured)
        raise DuchoFastError(f"no runtime x precision reaches cosine {pick.min_cosine}: {figures}")
    best = max(passing, key=lambda m: m.items_per_s or 0.0)
    line = (
        f"runtime {best.runtime} {best.precision} chosen by measurement (fastest with min "
        f"cosine >= {pick.min_cosine} to fp32): " + "; ".join(m.describe() for m in measured)
    )
    entry = {"runtime": best.runtime, "precision": best.precision, "describe": line}
    remember(base.cache, key, entry)
    return replace(base, runtime=best.runtime, precision=best.precision), line


def measure(
    ref: ModelRef,
    kind: str,
    base: RuntimeChoice,
    pick: AutoPick,
    candidates: list[tuple[str, str]],
    items: list[Item],
) -> list[Measured]:
    kind_of = modality(kind)
    sample = kind_of.export_sample(items)
    reference_runtime = next((r for r, p in candidates if p == "fp32"), "onnxruntime")
    fp32 = replace(base, runtime=reference_runtime, precision="fp32")
    reference = open_model(ref, kind, fp32, 0, sample)
    cases = kind_of.artifact_cases(reference.feed, sample)
    expected = [reference.session.run(inputs) for _, inputs in cases]
    timing_inputs = kind_of.sweep_inputs(reference.feed, items)(TIMING_BATCH)
    results = []
    for runtime, precision in candidates:
        choice = replace(base, runtime=runtime, precision=precision)
        try:
            results.append(measure_one(ref, kind, choice, sample, cases, expected, timing_inputs))
        except Exception as exc:  # any candidate that cannot open or run is skipped, saying why
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            results.append(Measured(runtime, precision, None, None, reason.rstrip(": ")))
    return results


def measure_one(
    ref: ModelRef,
    kind: str,
    choice: RuntimeChoice,
    sample: Sample,
    cases: list[tuple[str, dict]],
    expected: list[dict],
    timing_inputs: dict,
) -> Measured:
    opened = open_model(ref, kind, choice, 0, sample)
    got = [opened.session.run(inputs) for _, inputs in cases]
    cosines = [
        worst_cosine(want[name], have[name])
        for want, have in zip(expected, got, strict=True)
        for name in want
    ]
    cosine = float("nan") if any(math.isnan(c) for c in cosines) else min(cosines)
    rate = time_candidate(opened.session, choice, timing_inputs)
    return Measured(choice.runtime, choice.precision, rate, cosine)


def time_candidate(session: Any, choice: RuntimeChoice, inputs: dict) -> float:
    """items/s of one candidate on a batch like the run's (best of repeated runs)."""
    return items_per_second(session.run, inputs, TIMING_BATCH)


def choice_key(
    ref: ModelRef, kind: str, base: RuntimeChoice, pick: AutoPick, candidates: list
) -> str:
    parts = {
        "model": cache_key(ref, "fp32"),
        "kind": kind,
        "candidates": candidates,
        "min_cosine": pick.min_cosine,
        "threads": base.threads,
        "ort_provider": base.ort_provider,
        "machine": machine_key(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def read_choices(cache: Path) -> dict[str, Any]:
    try:
        return json.loads((cache / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def remember(cache: Path, key: str, entry: dict) -> None:
    """Best effort: a read-only cache measures again next time; the run is unaffected."""
    with contextlib.suppress(OSError):
        atomic_json(cache / CACHE_FILE, {**read_choices(cache), key: entry})
