"""Wall time of the static pre-check, as a student sees it: `grader check FILE` (no run) in N fresh
processes (interpreter start included), and `grader.precheck(FILE)` called N times in a real
Jupyter kernel (the first call, which imports the grader, reported apart).

Usage: python benchmarks/bench_check.py [FILE] [--runs N]
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
    parser.add_argument(
        "file", nargs="?", default=str(ROOT / "submissions" / "HW3_M112rhyang.ipynb")
    )
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    grader = shutil.which("grader") or str(Path(sys.executable).parent / "grader")
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        subprocess.run([grader, "check", args.file], cwd=ROOT, check=False, capture_output=True)
        times.append(time.perf_counter() - start)
    print(
        f"grader check {Path(args.file).name}: median {statistics.median(times):.3f} s "
        f"(min {min(times):.3f}, max {max(times):.3f}, {args.runs} runs)"
    )
    first, calls = _in_kernel(args.file, args.runs)
    print(
        f"grader.precheck() in a kernel: first call {first:.3f} s, then median "
        f"{statistics.median(calls):.3f} s "
        f"(min {min(calls):.3f}, max {max(calls):.3f}, {args.runs} calls)"
    )


def _in_kernel(file: str, runs: int) -> tuple[float, list[float]]:
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", cwd=str(ROOT))
    try:
        code = (
            "import time\nstart = time.perf_counter()\nimport grader\n"
            f"verdict = grader.precheck({file!r})\nprint(time.perf_counter() - start, "
            "verdict.problem)"
        )
        seconds = []
        for _ in range(runs + 1):
            printed: list[str] = []
            client.execute_interactive(
                code, output_hook=lambda m: printed.append(m["content"].get("text", "")), timeout=60
            )
            value, problem = "".join(printed).split(maxsplit=1)
            if problem.strip() != "None":
                raise SystemExit(f"precheck failed: {problem}")
            seconds.append(float(value))
        return seconds[0], seconds[1:]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


if __name__ == "__main__":
    main()
