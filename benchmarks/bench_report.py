"""`grader report OUT` of a large class: every page and export again from OUT/results, timed.

Writes N results like a real class's (each with a training curve, a confusion matrix, its surest
mistakes' pixels and three rule checks) into a scratch OUT, then runs `grader report OUT` several
times in a fresh process each:

- the first run, no plot drawn yet (results graded elsewhere, or PLOTS_VERSION raised): it draws
  every plot and keeps them in OUT/plots;
- the others: what a TA waits after an override edit (the median);
- in a second OUT, each result's plots drawn as `grader grade` draws them when the result lands
  (timed here, a result at a time: this cost moved off the end of the batch into the grading),
  then the first `grader report`, as at the end of `grader grade`.

Each time is wall-clock, with the CPU time of the command beside it: on a shared machine the CPU
time says what the wall-clock time hides.

Usage: python benchmarks/bench_report.py [--students 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import base64
import random
import resource
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
        confusion = tuple(
            tuple(rng.randrange(5) if t != p else 900 for p in range(10)) for t in range(10)
        )
        curve = {
            "every": 13,
            "first_step": 1,
            "loss": [2.0 / (1 + k / 50) for k in range(577)],
            "lr": [0.001] * 577,
            "epochs": [750 * e for e in range(10)],
            "validation": [[750 * e, 80 + e] for e in range(1, 11)],
            "test": [[7500, accuracy]],
        }
        pixels = bytes(rng.randrange(256) for _ in range(8 * 784))
        Result(
            student=f"s{i:03d}",
            source=f"HW3_s{i:03d}.ipynb",
            status=Status.GRADED,
            accuracy=accuracy,
            reported_accuracy=accuracy,
            score=60 if accuracy >= 89 else 50 if accuracy >= 84 else 30,
            max_score=60,
            bonus=5 if accuracy >= 90 else 0,
            duration_s=60.0,
            confusion=confusion,
            curve=curve,
            checks=tuple(
                Check(rule, True, "kept", f"HW3_s{i:03d}.ipynb")
                for rule in ("epochs", "valid_size", "linear_layers")
            ),
            flags=(),
            wrong=tuple((k, k % 10, (k + 1) % 10, 0.9) for k in range(8)),
            wrong_images=base64.b64encode(pixels).decode(),
        ).write(out / "results" / f"s{i:03d}.json")


def _report(out: Path) -> tuple[float, float]:
    """(wall-clock, CPU seconds) of `grader report OUT` in a fresh process."""
    grader = Path(sys.executable).parent / "grader"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [str(grader), "report", str(out), "--rubric", str(ROOT / "rubric.yaml")],
        check=True,
        capture_output=True,
    )
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def _land(out: Path) -> float:
    """Each result's plots drawn as `grader grade` draws them when the result lands (the batch's
    tracker makes this call); the seconds it took, all results."""
    from grader.model.results import Result
    from grader.model.rubric import load_rubric
    from grader.outputs.plot_store import draw_missing, student_plots

    rubric = load_rubric(ROOT / "rubric.yaml")
    start = time.perf_counter()
    for path in sorted((out / "results").glob("*.json")):
        draw_missing(out, student_plots(Result.read(path), rubric))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out, graded = Path(folder) / "out", Path(folder) / "graded"
        _write_class(out, args.students)
        cold = _report(out)
        again = [_report(out) for _ in range(args.runs)]
        _write_class(graded, args.students)
        landed = _land(graded)
        fresh = _report(graded)
    walls = sorted(round(w, 2) for w, _ in again)
    print(
        f"grader report of {args.students} results:\n"
        f"  no plot drawn yet (draws every plot): {cold[0]:.1f} s (CPU {cold[1]:.1f} s)\n"
        f"  after grader grade drew each result's plots as it landed "
        f"({1000 * landed / args.students:.0f} ms a result): "
        f"{fresh[0]:.2f} s (CPU {fresh[1]:.1f} s)\n"
        f"  again, {args.runs} runs: median {statistics.median(walls):.2f} s {walls} "
        f"(CPU median {statistics.median(c for _, c in again):.1f} s)"
    )


if __name__ == "__main__":
    main()
