"""A run beside a neighbour: the template alone, and beside a CPU hog with as many busy processes
as the machine has cores (another user, a second grader), bare and through the grader.

The bare run is `jupyter nbconvert --execute` with OpenMP's default waiting (spin 300,000 times
before sleeping); the grader's kernel spins briefly (GOMP_SPINCOUNT, see grader/execute.py). The
fair-share bound beside the hog is 2x the run alone. Runs alternate; medians and ratios to the
bare run alone are printed, with the peak memory the run's cgroup reported.

Usage: python benchmarks/bench_neighbour.py [NOTEBOOK] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@contextmanager
def hog(processes: int) -> Iterator[None]:
    """``processes`` busy loops for as long as the block runs."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        time.sleep(1)
        yield
    finally:
        for process in busy:
            process.kill()
            process.wait()


def _timed(command: list[str], cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "notebook", nargs="?", default=str(ROOT / "reference" / "HW3_template.ipynb")
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from grader.intake.dataset import prepare

    dataset = prepare()
    notebook = Path(args.notebook).resolve()
    cores = len(os.sched_getaffinity(0))
    series: dict[str, list[float]] = {
        "bare alone": [],
        "bare + hog": [],
        "grader alone": [],
        "grader + hog": [],
    }
    peaks: list[float] = []
    bare = [
        str(BIN / "jupyter-nbconvert"),
        "--to",
        "notebook",
        "--execute",
        "--ExecutePreprocessor.timeout=-1",
        "--output",
        "bare-run",
        notebook.name,
    ]
    grader = [str(BIN / "grader"), "check", str(notebook), "--run", "--json"]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "data").symlink_to(dataset.root)
        shutil.copy(notebook, work / notebook.name)
        for _ in range(args.runs):
            for crowded in (False, True):
                suffix = " + hog" if crowded else " alone"
                with hog(cores) if crowded else nullcontext():
                    series["bare" + suffix].append(_timed(bare, work)[0])
                    seconds, printed = _timed(grader, ROOT)
                    series["grader" + suffix].append(seconds)
                peak = json.loads(printed).get("peak_memory_mb")
                if peak is not None:
                    peaks.append(peak)
    base = statistics.median(series["bare alone"])
    print(f"{notebook.name}, {args.runs} runs each, hog = {cores} busy processes on {cores} cores:")
    for name, times in series.items():
        median = statistics.median(times)
        print(
            f"  {name:<13} median {median:6.1f} s  ratio {median / base:.2f}  "
            f"{sorted(round(t, 1) for t in times)}"
        )
    if peaks:
        print(f"  peak memory of the grader's run (cgroup): {max(peaks):.0f} MB")


if __name__ == "__main__":
    main()
