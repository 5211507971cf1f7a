"""The trusted evaluator's own time (grader/run/evaluate.py ``evaluate``) on the 10,000 official test
images, for a capture of an honest BatchNorm MLP: the checks of the graph, the rebuilt inputs, the
run, the pair re-runs. With ``--against REV`` the evaluator of that git revision is timed too,
interleaved with this one, on the same capture (the ops both allow).

Usage: python benchmarks/bench_evaluate.py [--runs 3] [--against REV]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _revision(rev: str, folder: Path) -> Any:
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:grader/run/evaluate.py"], check=True,
                            capture_output=True, text=True).stdout
    path = folder / "evaluate_at_revision.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("evaluate_at_revision", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--against", help="a git revision whose evaluator is timed beside this one")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from test_evaluate import Net, _capture

    from grader.intake.dataset import prepare
    from grader.model.dataset import TEST_IMAGES
    from grader.run import evaluate
    from grader.static.rules.linear_layers import RUNNABLE

    images_path = prepare(allow_download=False).raw / TEST_IMAGES  # `make data` puts it there
    images = evaluate._official(images_path)
    capture = _capture(Net(), ((images.float() / 255 - 0.286) / 0.353).reshape(-1, 1, 28, 28))
    with tempfile.TemporaryDirectory() as folder:
        contenders = {"this": evaluate}
        if args.against:
            contenders[args.against] = _revision(args.against, Path(folder))
        times: dict[str, list[float]] = {name: [] for name in contenders}
        allowed = RUNNABLE - {"sym_size", "_assert_tensor_metadata"}  # what every revision allows
        for _ in range(args.runs):
            for name, module in contenders.items():
                start = time.perf_counter()
                module.evaluate(capture, images_path, allowed)
                times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        print(f"{name}: median {statistics.median(seconds):.2f} s over {args.runs} runs "
              f"({', '.join(f'{s:.2f}' for s in seconds)})")


if __name__ == "__main__":
    main()
