"""Which machine this is, for caches whose entries only hold on the CPU that made them
(swept batch sizes, compiled OpenVINO models)."""

from __future__ import annotations

import functools
import hashlib
import os
import platform
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version


@functools.cache
def machine_key() -> str:
    """CPU model name and core count (e.g. `AMD EPYC|2`). Never `platform.processor()`: it runs
    `uname -p` in a subprocess, whose pipe a decode worker forked at that moment inherits, and
    the run then waits for that worker forever (seen: an OpenVINO run hung while opening)."""
    cpu = platform.machine()
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


def installed_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Each installed package's version (None when absent), for keys of remembered
    measurements that an upgrade must invalidate."""
    found: dict[str, str | None] = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found
