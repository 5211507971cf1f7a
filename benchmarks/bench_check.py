"""Wall time of the static pre-check `grader check FILE` (no run), as a student sees it.

Usage: python benchmarks/bench_check.py [FILE] [--runs N]
Prints the median and spread of N fresh processes (interpreter start included).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("file", nargs="?", default=str(ROOT / "submissions" / "HW3_M112rhyang.ipynb"))
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    grader = shutil.which("grader") or str(Path(sys.executable).parent / "grader")
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run([grader, "check", args.file], cwd=ROOT, check=False, capture_output=True)
        times.append(time.perf_counter() - start)
    print(f"grader check {Path(args.file).name}: median {statistics.median(times):.3f} s "
          f"(min {min(times):.3f}, max {max(times):.3f}, {args.runs} runs)")


if __name__ == "__main__":
    main()
