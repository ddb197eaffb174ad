"""`--runtime auto` / `--precision auto`: the fastest runtime x precision that keeps fidelity.

Every candidate available here (ONNX Runtime fp32/int8, OpenVINO fp32/bf16, ...) is opened on
the model's artifact, timed on batches like the run's, and compared with fp32 on the
modality's artifact cases (and the run's own sample). The fastest whose minimum cosine to fp32
reaches the floor (`min_cosine`, 0.99 by default) wins. The choice is remembered per model,
modality, candidate set, floor, threads and CPU, like the batch-size sweep, so only the first
run pays for it; the run summary prints the choice and the figures behind it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ducho_fast.core.cache import Remembered
from ducho_fast.core.errors import DuchoFastError
from ducho_fast.core.fidelity import GATES, Gate, compare
from ducho_fast.core.machine import installed_versions, machine_key
from ducho_fast.core.records import Item
from ducho_fast.engine.batch_sweep import items_per_second
from ducho_fast.modalities import Sample, modality
from ducho_fast.models.spec import ModelRef
from ducho_fast.resolve import OpenModel, cache_key, open_model
from ducho_fast.runtime.table import RUNTIMES, RuntimeChoice

AUTO = "auto"
GPU_RUNTIMES = ("tensorrt",)  # chosen explicitly: auto never moves a run onto a GPU


def default_runtime(precision: str) -> str:
    """The runtime when none is given. fp32 (and precision auto): the fastest here that gives
    fp32's values, measured once per model and CPU (on an AMD EPYC OpenVINO fp32 ran 1.0-1.9x
    ONNX Runtime fp32: MiniLM 1.09x, EfficientNet-Lite0 1.88x). A reduced precision keeps a
    fixed runtime, so its output folder (`-int8-onnxruntime`) and values do not depend on a
    measurement: ONNX Runtime, or OpenVINO for bf16 (the artifact runtime that runs it)."""
    if precision in ("fp32", AUTO):
        return AUTO
    return "openvino" if precision == "bf16" else "onnxruntime"


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
            if spec.name in GPU_RUNTIMES and not self.runtime:
                continue
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
    """A concrete choice, or (when either is `auto`) a base choice and what to measure.

    A GPU precision (fp16) or a GPU provider of ONNX Runtime names its runtime: `auto` then
    means ONNX Runtime, never a CPU runtime measured against the GPU the user asked for."""
    if runtime == AUTO and (
        precision in GPU_PRECISIONS or settings.get("ort_provider", "cpu") != "cpu"
    ):
        runtime = "onnxruntime"
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
    max_abs: float | None = None  # fp32 candidates: their values, not only their direction
    passed: bool = False

    def describe(self) -> str:
        if self.skipped is not None:
            return f"{self.runtime} {self.precision}: skipped ({self.skipped})"
        exact = f", max-abs {self.max_abs:.1e}" if self.max_abs is not None else ""
        verdict = "" if self.passed else " (below the gate)"
        return (
            f"{self.runtime} {self.precision}: {self.items_per_s:.1f} items/s, "
            f"min cosine {self.min_cosine:.5f}{exact}{verdict}"
        )


def auto_choice(
    ref: ModelRef,
    kind: str,
    base: RuntimeChoice,
    pick: AutoPick,
    items: list[Item],
    item_timeout_s: float = 60.0,
) -> tuple[RuntimeChoice, str]:
    """The measured choice (or the remembered one) and a line saying why."""
    candidates = pick.candidates()
    if not candidates:
        raise DuchoFastError(f"no runtime here can run {pick.precision or 'any precision'}")
    key = choice_key(ref, kind, base, pick, candidates)
    remembered = choices(base.cache).entry(key)
    if remembered is not None:
        chosen = replace(base, runtime=remembered["runtime"], precision=remembered["precision"])
        return chosen, f"{remembered['describe']} (remembered)"
    if candidates == [(candidates[0][0], "fp32")]:  # one exact candidate: nothing to measure
        runtime, precision = candidates[0]
        return replace(base, runtime=runtime, precision=precision), f"runtime {runtime} {precision}"
    measured = measure(ref, kind, base, pick, candidates, items, item_timeout_s)
    passing = [m for m in measured if m.skipped is None and m.passed]
    if not passing:
        figures = "; ".join(m.describe() for m in measured)
        raise DuchoFastError(f"no runtime x precision reaches {gate_text(pick)}: {figures}")
    best = max(passing, key=lambda m: m.items_per_s or 0.0)
    line = (
        f"runtime {best.runtime} {best.precision} chosen by measurement (fastest with "
        f"{gate_text(pick)} to fp32): " + "; ".join(m.describe() for m in measured)
    )
    entry = {"runtime": best.runtime, "precision": best.precision, "describe": line}
    choices(base.cache).remember(key, entry)
    return replace(base, runtime=best.runtime, precision=best.precision), line


def candidate_gate(pick: AutoPick, precision: str) -> Gate:
    """fp32 candidates must give fp32's values (the export's fp32 gate, max-abs included), so
    that choosing a runtime never changes Ducho's files beyond float rounding; reduced
    precisions are held to the cosine floor."""
    if precision != "fp32":
        return Gate(pick.min_cosine, None)
    exact = GATES["fp32"]
    return Gate(max(exact.min_cosine, pick.min_cosine), exact.max_abs)


def gate_text(pick: AutoPick) -> str:
    if pick.precision == "fp32":
        gate = candidate_gate(pick, "fp32")
        return f"cosine >= {gate.min_cosine} and max-abs <= {gate.max_abs}"
    return f"cosine >= {pick.min_cosine}"


def measure(
    ref: ModelRef,
    kind: str,
    base: RuntimeChoice,
    pick: AutoPick,
    candidates: list[tuple[str, str]],
    items: list[Item],
    item_timeout_s: float = 60.0,
) -> list[Measured]:
    kind_of = modality(kind)
    sample = kind_of.export_sample(items, item_timeout_s)  # a stalled file waits no longer
    reference_runtime = next((r for r, p in candidates if p == "fp32"), "onnxruntime")
    fp32 = replace(base, runtime=reference_runtime, precision="fp32")
    reference = open_model(ref, kind, fp32, 0, sample)
    cases = kind_of.artifact_cases(reference.feed, sample)
    expected = [graph_session(reference).run(inputs) for _, inputs in cases]
    timing_inputs = kind_of.sweep_inputs(reference.feed, items)(TIMING_BATCH)
    results = []
    for runtime, precision in candidates:
        choice = replace(base, runtime=runtime, precision=precision)
        gate = candidate_gate(pick, precision)
        try:
            results.append(
                measure_one(ref, kind, choice, sample, cases, expected, timing_inputs, gate)
            )
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
    gate: Gate,
) -> Measured:
    opened = open_model(ref, kind, choice, 0, sample)
    got = [graph_session(opened).run(inputs) for _, inputs in cases]
    results = [
        compare(kind, case, name, want[name], have[name], gate)
        for (case, _), want, have in zip(cases, expected, got, strict=True)
        for name in want
    ]
    cosines = [r.min_cosine for r in results]
    cosine = float("nan") if any(math.isnan(c) for c in cosines) else min(cosines)
    max_abs = max(r.max_abs for r in results) if gate.max_abs is not None else None
    passed = all(r.passed for r in results) and not math.isnan(cosine)
    rate = time_candidate(opened.session, choice, timing_inputs)
    return Measured(choice.runtime, choice.precision, rate, cosine, None, max_abs, passed)


def graph_session(opened: OpenModel) -> Any:
    """The graph's own session, which the artifact cases feed; the engine runs it through the
    modality's adapter (audio: clips cut into windows and pooled back), timed separately."""
    return getattr(opened.session, "inner", opened.session)


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
        "libraries": runtime_versions(candidates),  # an upgrade measures (and gates) again
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def runtime_versions(candidates: list[tuple[str, str]]) -> dict[str, str | None]:
    packages = {RUNTIMES.lookup(runtime).requires for runtime, _ in candidates}
    return installed_versions(sorted(p for p in packages if p))


def choices(cache: Path) -> Remembered:
    """The remembered choices (best effort: a read-only cache measures again next time)."""
    return Remembered(cache / CACHE_FILE)
