"""What the grader's probe costs a training run, apart from the kernel and the sandbox.

Runs a notebook exported as a .py script in this process, once bare and once with the probe
installed (as the grader's setup cell does), and with ``--timed`` also sums the time spent in the
probe's hooks and patches. The .py runs in a scratch folder whose ``data/`` is the prepared dataset.

    python benchmarks/probe_cost.py tests/fixtures/HW3_cuda.py [--probe] [--timed]

Run each mode in its own process (the probe patches torch for good); pin both alike, e.g.
``taskset -c 0,1 env OMP_NUM_THREADS=2``, to compare with a graded job's 2 cores.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import runpy
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

SPENT: collections.Counter[str] = collections.Counter()
CALLS: collections.Counter[str] = collections.Counter()


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - start
            CALLS[name] += 1

    return wrapper


def _time_the_probe() -> None:
    """Wrap the recorder's hooks and the key matching before install binds them."""
    from grader.probe.content import ImageIndex
    from grader.probe.continuity import Continuity
    from grader.probe.gradients import LinearGradients
    from grader.probe.predictions import TestPasses
    from grader.probe.recorder import Recorder
    from grader.probe.training import Draws

    for name in (
        "before_call",
        "after_call",
        "on_step",
        "loader_batch",
        "before_step",
        "after_update",
    ):
        setattr(Recorder, name, _timed(f"Recorder.{name}", getattr(Recorder, name)))
    TestPasses._test_rows = _timed("TestPasses._test_rows", TestPasses._test_rows)  # type: ignore[method-assign]
    Draws._train_rows = _timed("Draws._train_rows", Draws._train_rows)  # type: ignore[method-assign]
    for name in ("on_call", "step_begins", "update_done"):
        setattr(
            LinearGradients, name, _timed(f"LinearGradients.{name}", getattr(LinearGradients, name))
        )
    for name in ("check", "keep"):
        setattr(Continuity, name, _timed(f"Continuity.{name}", getattr(Continuity, name)))
    ImageIndex.match = _timed("ImageIndex.match", ImageIndex.match)  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", type=Path)
    parser.add_argument(
        "--probe", action="store_true", help="install the probe first, export after"
    )
    parser.add_argument("--timed", action="store_true", help="with --probe: time the probe's hooks")
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache/grader/fashion-mnist")
    args = parser.parse_args()
    script = args.script.resolve()
    work = Path(tempfile.mkdtemp(prefix="probe-cost-"))
    (work / "data").symlink_to(args.data)
    os.chdir(work)
    start = time.perf_counter()
    if args.probe:
        if args.timed:
            _time_the_probe()
        import grader.probe.runtime as runtime

        runtime.install(
            {
                "seed": 0,
                "data_root": str(args.data),
                "output": str(work / "probe.json"),
                "num_classes": 10,
                "threads": int(os.environ.get("OMP_NUM_THREADS", "0")) or None,
                "gpu_memory_mb": 0,
            }
        )
        installed = time.perf_counter() - start
    runpy.run_path(str(script), run_name="__main__")
    ran = time.perf_counter() - start
    if args.probe:
        runtime.export()
        exported = time.perf_counter() - start
        print(
            f"probe: install {installed:.2f} s, export {exported - ran:.2f} s, "
            f"probe.json {(work / 'probe.json').stat().st_size / 1e6:.1f} MB"
        )
        for name, spent in SPENT.most_common():
            print(
                f"  {name}: {spent:.2f} s in {CALLS[name]} calls "
                f"({spent / CALLS[name] * 1e6:.0f} us each)"
            )
    print(f"{'probe' if args.probe else 'bare'} wall: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
