"""Batch throughput and the cached re-run.

Copies one notebook N times into a fresh class folder, grades it with `--jobs 1` and with
`--jobs 2` (fresh OUT each, --force), then re-runs the last batch unchanged (served from the
cache). Prints wall times and the jobs-1/jobs-2 ratio.

Usage: python benchmarks/bench_batch.py [NOTEBOOK] [-n N] [--jobs 1 2 ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRADER = str(Path(sys.executable).parent / "grader")


def _grade(folder: Path, out: Path, *extra: str) -> float:
    start = time.perf_counter()
    done = subprocess.run([GRADER, "grade", str(folder), "--out", str(out), *extra], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"grader grade failed: {done.stderr.strip()}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("notebook", nargs="?", default=str(ROOT / "reference" / "HW3_template.ipynb"))
    parser.add_argument("-n", type=int, default=4, help="how many copies (default 4)")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "class"
        folder.mkdir()
        for i in range(args.n):
            shutil.copy(args.notebook, folder / f"HW3_student{i:03d}{Path(args.notebook).suffix}")
        times = {}
        for jobs in args.jobs:
            times[jobs] = _grade(folder, Path(temp) / f"out{jobs}", "--jobs", str(jobs), "--force")
            print(f"{args.n} x {Path(args.notebook).name}, --jobs {jobs}: {times[jobs]:.1f} s", flush=True)
        cached = _grade(folder, Path(temp) / f"out{args.jobs[-1]}", "--jobs", str(args.jobs[-1]))
        print(f"unchanged re-run (cached): {cached:.2f} s")
        if 1 in times:
            for jobs in args.jobs:
                print(f"speed-up of --jobs {jobs} over --jobs 1: {times[1] / times[jobs]:.2f}")


if __name__ == "__main__":
    main()
