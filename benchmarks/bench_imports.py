"""What `grader check FILE` and `grader report OUT` load: modules (the grader's and all) and wall
time,
medians of several fresh interpreters. Run from a checkout: ``python benchmarks/bench_imports.py``
(PYTHONPATH=OTHER_CHECKOUT compares another version of the grader on the same machine)."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import sys, json, io, contextlib
from grader.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    main({argv!r})
print(json.dumps([m for m in sys.modules]))
"""


def measure(argv: list[str], runs: int) -> tuple[int, int, float]:
    """(grader modules, all modules, median seconds) of ``grader ARGV`` in fresh interpreters."""
    times, loaded = [], []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", PROBE.format(argv=argv)],
            capture_output=True,
            text=True,
            check=True,
        )
        times.append(time.perf_counter() - started)
        loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return (
        sum(1 for m in loaded if m == "grader" or m.startswith("grader.")),
        len(loaded),
        statistics.median(times),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "out"
        (out / "results").mkdir(parents=True)
        for name, argv in (
            ("grader check FILE", ["check", str(ROOT / "submissions" / "HW3_M112rhyang.ipynb")]),
            ("grader report OUT (empty)", ["report", str(out)]),
        ):
            grader_modules, modules, seconds = measure(argv, args.runs)
            print(
                f"{name}: {grader_modules} grader modules, {modules} modules in all, median "
                f"{seconds:.3f} s ({args.runs} runs)"
            )


if __name__ == "__main__":
    main()
