"""Grader overhead on a real run: `grader check X --run` against the bare notebook run.

The bare run is `jupyter nbconvert --to notebook --execute` on the same notebook in a folder
whose data/ points at the prepared FashionMNIST, so it trains exactly what the grader trains,
without
the probe, the measurement or the reports. The grader runs twice per round: in the sandbox
(the default where bubblewrap works) and with --no-sandbox. Runs alternate; medians and
their ratios to the bare run are printed.

Usage: python benchmarks/bench_run.py [NOTEBOOK] [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


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
    series: dict[str, list[float]] = {"bare": [], "sandboxed": [], "no-sandbox": []}
    grader = [str(BIN / "grader"), "check", str(notebook), "--run"]
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "data").symlink_to(dataset.root)
        shutil.copy(notebook, work / notebook.name)
        for _ in range(args.runs):
            series["bare"].append(
                _timed(
                    [
                        str(BIN / "jupyter-nbconvert"),
                        "--to",
                        "notebook",
                        "--execute",
                        "--ExecutePreprocessor.timeout=-1",
                        "--output",
                        "bare-run",
                        notebook.name,
                    ],
                    work,
                )
            )
            series["sandboxed"].append(_timed(grader, ROOT))
            series["no-sandbox"].append(_timed([*grader, "--no-sandbox"], ROOT))
    bare = statistics.median(series["bare"])
    print(f"{notebook.name}, {args.runs} runs each:")
    for name, times in series.items():
        median = statistics.median(times)
        print(
            f"  {name:<11} median {median:6.1f} s  ratio {median / bare:.3f}  "
            f"{sorted(round(t, 1) for t in times)}"
        )


if __name__ == "__main__":
    main()
