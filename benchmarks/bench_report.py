"""`grader report OUT` of a large class: every page and export again from OUT/results, timed.

Writes N results like a real class's (each with a training curve, a confusion matrix, its surest
mistakes' pixels and three rule checks) into a scratch OUT, then runs `grader report OUT` several
times in a fresh process each. The first run draws every plot (as the end of `grader grade` does)
and keeps them in OUT/plots; the median of the others is what a TA waits after an override edit.

Usage: python benchmarks/bench_report.py [--students 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import base64
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _write_class(out: Path, students: int) -> None:
    sys.path.insert(0, str(ROOT))
    from grader.model.results import Check, Result, Status

    rng = random.Random(0)
    (out / "results").mkdir(parents=True)
    for i in range(students):
        accuracy = round(rng.uniform(78, 91), 2)
        confusion = tuple(tuple(rng.randrange(5) if t != p else 900 for p in range(10)) for t in range(10))
        curve = {"every": 13, "first_step": 1, "loss": [2.0 / (1 + k / 50) for k in range(577)], "lr": [0.001] * 577,
                 "epochs": [750 * e for e in range(10)], "validation": [[750 * e, 80 + e] for e in range(1, 11)],
                 "test": [[7500, accuracy]]}
        pixels = bytes(rng.randrange(256) for _ in range(8 * 784))
        Result(student=f"s{i:03d}", source=f"HW3_s{i:03d}.ipynb", status=Status.GRADED, accuracy=accuracy,
               reported_accuracy=accuracy, score=60 if accuracy >= 89 else 50 if accuracy >= 84 else 30, max_score=60,
               bonus=5 if accuracy >= 90 else 0, duration_s=60.0, confusion=confusion, curve=curve,
               checks=tuple(Check(rule, True, "kept", f"HW3_s{i:03d}.ipynb") for rule in ("epochs", "valid_size", "linear_layers")),
               flags=(), wrong=tuple((k, k % 10, (k + 1) % 10, 0.9) for k in range(8)),
               wrong_images=base64.b64encode(pixels).decode()).write(out / "results" / f"s{i:03d}.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    grader = Path(sys.executable).parent / "grader"
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "out"
        _write_class(out, args.students)
        times = []
        for _ in range(args.runs + 1):
            start = time.perf_counter()
            subprocess.run([str(grader), "report", str(out), "--rubric", str(ROOT / "rubric.yaml")], check=True,
                           capture_output=True)
            times.append(time.perf_counter() - start)
    first, again = times[0], times[1:]
    print(f"grader report of {args.students} results: first run (draws every plot) {first:.1f} s; then, {args.runs} "
          f"runs: median {statistics.median(again):.2f} s {sorted(round(t, 2) for t in again)}")


if __name__ == "__main__":
    main()
