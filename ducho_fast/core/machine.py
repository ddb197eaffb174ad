"""Which machine this is, for caches whose entries only hold on the CPU that made them
(swept batch sizes, compiled OpenVINO models)."""

from __future__ import annotations

import hashlib
import os
import platform


def machine_key() -> str:
    """CPU model name and core count (e.g. `AMD EPYC|2`)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in info if "model name" in line), cpu
            )
    except OSError:
        pass
    return f"{cpu}|{os.cpu_count()}"


def machine_id() -> str:
    """A short, file-name-safe form of `machine_key`."""
    return hashlib.sha256(machine_key().encode()).hexdigest()[:12]
