"""Refuse large or generated files in git: model weights, ONNX graphs and their external data,
outputs. Run by `make lint` (and so by CI) on the files git tracks or is about to commit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MAX_BYTES = 2 << 20  # a few MB at most: figures and small fixtures, never models or outputs
REFUSED_SUFFIXES = (".data", ".onnx", ".onnx_data", ".engine", ".pt", ".pth", ".safetensors")
ALLOWED = ("tests/data/",)  # tiny hand-made fixtures


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
    )
    return [name for name in listed.stdout.decode().split("\0") if name]


def problems(names: list[str]) -> list[str]:
    found = []
    for name in names:
        path = Path(name)
        if not path.is_file() or name.startswith(ALLOWED):
            continue
        if path.suffix.lower() in REFUSED_SUFFIXES:
            found.append(f"{name}: {path.suffix} files never go in the repository")
        elif path.stat().st_size > MAX_BYTES:
            found.append(f"{name}: {path.stat().st_size / 2**20:.1f} MB (limit 2 MB)")
    return found


def main() -> int:
    found = problems(tracked_files())
    for line in found:
        print(f"error: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
