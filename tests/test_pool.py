"""Decode workers and the machine key: nothing a forked worker can inherit hangs the run."""

from __future__ import annotations

import multiprocessing
import os
import platform
import subprocess
import threading

import pytest

from ducho_fast.core import machine
from ducho_fast.core.pool import decoded_batches


def test_machine_key_runs_no_subprocess(monkeypatch):
    """`platform.processor()` runs `uname -p`; a worker forked while its pipe is open keeps the
    pipe open and the run waits forever (an OpenVINO run hung opening its model)."""
    forget = getattr(machine.machine_key, "cache_clear", lambda: None)
    forget()
    monkeypatch.setattr(platform, "_uname_cache", None)  # platform caches `uname -p`

    def refuse(*args, **kwargs):
        raise AssertionError(f"machine_key started a subprocess: {args}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "check_output", refuse)
    assert machine.machine_key().endswith(f"|{os.cpu_count()}")
    forget()


def test_workers_fork_in_the_calling_thread_not_the_reading_one():
    before = set(multiprocessing.active_children())
    batches = decoded_batches(list(range(10)), [[0, 1], [2, 3], [4]], sum, 2, read_ahead=2)
    forked = set(multiprocessing.active_children()) - before
    assert len(forked) == 2  # before anything was read: the caller's thread forked them
    results: list[int] = []
    reader = threading.Thread(target=lambda: results.extend(batches))
    reader.start()
    reader.join(timeout=60)
    assert results == [1, 5, 4]


@pytest.mark.parametrize("workers", [0, 2])
def test_decoded_batches_keep_order(workers):
    chunks = [[i, i + 1] for i in range(0, 20, 2)]
    assert list(decoded_batches(list(range(20)), chunks, sum, workers, read_ahead=3)) == [
        sum(c) for c in chunks
    ]
