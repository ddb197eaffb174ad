"""Ray start-up against a local run: the same small job as fresh commands, interleaved.

    PYTHONPATH=. python benchmarks/ray_startup.py MODEL IMAGES [--items 32] [--repeats 3]

Each repetition runs `extract` on the first N images locally, then on a local Ray (1 actor,
1 inference thread each), and prints the command time and the time to the first committed
batch of each, with the load average (results/vm-2026-12-02-ray/ray-startup.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

JOB = """
import json, sys
from pathlib import Path
from ducho_fast.api import RunOptions, SingleModelJob, extract_single
model, images, out, engine, items = sys.argv[1:6]
job = SingleModelJob(model, Path(out), images=Path(images), batch_size=16, limit=int(items))
options = RunOptions(progress=False, engine=engine, ray_workers=1, threads=1, overwrite=True,
                     output_format="compact")
(result,) = extract_single(job, options)
print(json.dumps({"first_batch_unix": result.metrics["first_batch_unix"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("images")
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    found: dict[str, list] = {"local": [], "ray": []}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):
            for engine in found:
                out = os.path.join(work, engine)
                command = [sys.executable, "-c", JOB, args.model, args.images, out, engine]
                start = time.time()
                done = subprocess.run(
                    [*command, str(args.items)], capture_output=True, text=True, check=True
                )
                end = time.time()
                first = json.loads(done.stdout.strip().splitlines()[-1])["first_batch_unix"]
                row = {
                    "command_s": round(end - start, 1),
                    "to_first_batch_s": round(first - start, 1),
                    "load": os.getloadavg()[0],
                }
                found[engine].append(row)
                print(engine, row, flush=True)
    print(json.dumps(found))


if __name__ == "__main__":
    main()
