"""A batch's CPU with warm evaluators (one server per slot, a fork per capture) against a fresh
evaluator per student: the legal corpus's first N notebooks graded as one sandboxed class on the
tiny data, two jobs at a time, alternately both ways, with the machine's busy CPU seconds (from
/proc/stat: every process, the sandboxes' included) and the wall time of each run.

Usage: python benchmarks/bench_warm.py [-n 8] [--runs 2]   (as root, where bubblewrap runs)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from tinydata import make_tiny_fashion_mnist  # noqa: E402

from grader.model.context import Context  # noqa: E402
from grader.model.dataset import Dataset  # noqa: E402
from grader.model.rubric import load_rubric  # noqa: E402
from grader.pipeline.batch import grade_directory  # noqa: E402
from grader.pipeline.executors import local  # noqa: E402
from grader.run.slots import plan_slots  # noqa: E402
from grader.static.reference import derive_facts  # noqa: E402

CORPUS = ROOT / "tests" / "fixtures" / "legal"


def _busy() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / 100


def _grade(names: list[str], context: Context, warm: bool) -> tuple[float, float, list[str]]:
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as work:
        folder = Path(work) / "class"
        folder.mkdir()
        for name in names:
            shutil.copy(CORPUS / name, folder / name)
        off = mock.patch.object(local, "warm_evaluators", contextlib.nullcontext)
        with off if not warm else contextlib.nullcontext():
            cpu, wall = _busy(), time.perf_counter()
            summary = grade_directory(
                folder, Path(work) / "out", context, local.LocalExecutor(plan_slots(2, 2, (), 1, 1))
            )
            cpu, wall = _busy() - cpu, time.perf_counter() - wall
    found = sorted(f"{r.source} {r.status.value} {r.accuracy}" for r in summary.results)
    return cpu, wall, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=8, help="how many notebooks of the corpus")
    parser.add_argument("--runs", type=int, default=2, help="runs of each way")
    args = parser.parse_args()
    rubric = load_rubric(ROOT / "rubric.yaml")
    with tempfile.TemporaryDirectory(prefix="bench-warm-data-") as data:
        dataset = Dataset(make_tiny_fashion_mnist(Path(data), noise=0.25))
        context = Context(
            dataclasses.replace(rubric, hide_test_labels=False),
            derive_facts(rubric.template),
            dataset,
            sandboxed=True,
        )
        names = sorted(p.name for p in CORPUS.glob("HW3_*"))[: args.n]
        seen: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        results: dict[bool, list[str]] = {}
        for _ in range(args.runs):
            for warm in (False, True):
                cpu, wall, results[warm] = _grade(names, context, warm)
                seen[warm].append((cpu, wall))
                print(f"{'warm ' if warm else 'fresh'}: {cpu:6.1f} s CPU, {wall:6.1f} s wall")
        for warm in (False, True):
            cpu = statistics.median(c for c, _ in seen[warm])
            wall = statistics.median(w for _, w in seen[warm])
            label = "warm evaluators" if warm else "fresh evaluators"
            print(
                f"{label}: median {cpu:.1f} s CPU ({cpu / len(names):.2f} s a student), "
                f"{wall:.1f} s wall"
            )
        print("same results both ways:", results[True] == results[False])


if __name__ == "__main__":
    main()
