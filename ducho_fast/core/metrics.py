"""Per-stage timing: where the time went, and throughput without start-up."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

STAGES = ("read_decode", "preprocess", "inference", "fusion", "write", "wait_for_input")


@dataclass
class StageTimer:
    """Thread-safe sums of seconds per stage, plus item counts and the first-batch time."""

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    items: int = 0
    started: float = field(default_factory=time.perf_counter)
    first_batch_at: float | None = None
    first_batch_items: int = 0
    first_batch_unix: float | None = None  # wall clock, so a parent process can time start-up
    first_input_unix: float | None = None  # when the first batch reached inference
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] += seconds

    def mark_first_input(self) -> None:
        with self._lock:
            if self.first_input_unix is None:
                self.first_input_unix = time.time()

    def count(self, items: int) -> None:
        with self._lock:
            if self.first_batch_at is None:
                self.first_batch_at = time.perf_counter()
                self.first_batch_unix = time.time()
                self.first_batch_items = items
            self.items += items

    def summary(self) -> dict:
        total = time.perf_counter() - self.started
        startup = (self.first_batch_at or time.perf_counter()) - self.started
        steady = max(total - startup, 1e-9)
        inference = self.seconds.get("inference", 0.0)
        waited = self.seconds.get("wait_for_input", 0.0)
        return {
            "items": self.items,
            "wall_seconds": total,
            "startup_seconds": startup,
            "first_batch_unix": self.first_batch_unix,
            "first_input_unix": self.first_input_unix,
            "items_per_s": self.items / total if total > 0 else 0.0,
            "items_per_s_after_startup": (self.items - self.first_batch_items) / steady,
            "stage_seconds": dict(self.seconds),
            "inference_wait_share": waited / (waited + inference) if inference + waited else 0.0,
        }
