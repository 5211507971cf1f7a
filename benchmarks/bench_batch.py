"""Batch throughput and the cached re-run.

Copies one notebook N times into a fresh class folder and grades it once per setup (fresh OUT
each, --force): `--jobs J` for each J given, `--per-gpu K` for each K given (on a GPU machine),
and `--executor ray` with --ray (a Ray instance started for the batch, or the cluster at
`--ray ADDR`, which also saves the instance's start-up on the cached re-run). Then it re-runs the
last setup
unchanged, which the cache serves. Prints wall times and each setup's speed-up over the first.

Usage: python benchmarks/bench_batch.py [NOTEBOOK] [-n N] [--jobs 1 2 ...] [--per-gpu 1 4 8] [--ray
[ADDR]]
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


def _grade(folder: Path, out: Path, extra: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [GRADER, "grade", str(folder), "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise SystemExit(f"grader grade {' '.join(extra)} failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "notebook", nargs="?", default=str(ROOT / "reference" / "HW3_template.ipynb")
    )
    parser.add_argument("-n", type=int, default=4, help="how many copies (default 4)")
    parser.add_argument("--jobs", type=int, nargs="*", default=[1, 2])
    parser.add_argument(
        "--per-gpu", type=int, nargs="*", default=[], help="GPU machines: e.g. 1 4 8"
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDR",
        help="also grade with --executor ray (at the cluster ADDR if given)",
    )
    args = parser.parse_args()
    setups = (
        [["--jobs", str(j)] for j in args.jobs]
        + [["--per-gpu", str(k)] for k in args.per_gpu]
        + (
            [["--executor", "ray", *(["--address", args.ray] if args.ray else [])]]
            if args.ray is not None
            else []
        )
    )
    if not setups:
        raise SystemExit("give at least one of --jobs, --per-gpu, --ray")
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "class"
        folder.mkdir()
        for i in range(args.n):
            shutil.copy(args.notebook, folder / f"HW3_student{i:03d}{Path(args.notebook).suffix}")
        times = []
        for number, extra in enumerate(setups):
            times.append(_grade(folder, Path(temp) / f"out{number}", [*extra, "--force"]))
            print(
                f"{args.n} x {Path(args.notebook).name}, {' '.join(extra)}: {times[-1]:.1f} s "
                f"(speed-up over {' '.join(setups[0])}: {times[0] / times[-1]:.2f})",
                flush=True,
            )
        cached = _grade(folder, Path(temp) / f"out{len(setups) - 1}", setups[-1])
        print(f"unchanged re-run of the last setup (cached): {cached:.2f} s")


if __name__ == "__main__":
    main()
