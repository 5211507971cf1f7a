"""The trusted evaluator's own time (grader/evaluator/ ``answer.evaluate``) on the 10,000 official
test images, for a capture of an honest BatchNorm MLP: the checks of the graph, the rebuilt inputs,
the run, the pair re-runs. With ``--against REV`` the evaluator of that git revision is timed too
(grader/run/evaluate.py before the evaluator became a package), interleaved with this one, on the
same capture (the ops both allow). Each run is a fresh interpreter, its imports done first (as
the grader starts the evaluator before the notebook runs); only the call is timed.

Usage: python benchmarks/bench_evaluate.py [--runs 3] [--against REV]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# One timed call of a checkout's evaluator: ROOT CAPTURE IMAGES ALLOWED -> seconds.
RUNNER = """
import sys, time
from pathlib import Path
import numpy, torch, torch._export.serde.serialize, torch._subclasses.fake_tensor  # imported before
import torch.export.graph_signature, torch.fx.passes.shape_prop  # the capture comes, as in the grader
sys.path.insert(0, sys.argv[1])
try:
    from grader.evaluator.answer import evaluate
except ImportError:  # a revision before the evaluator's package
    from grader.run.evaluate import evaluate
data = Path(sys.argv[2]).read_bytes()
start = time.perf_counter()
evaluate(data, Path(sys.argv[3]), frozenset(sys.argv[4].split(",")))
print(time.perf_counter() - start)
"""  # noqa: E501


def _revision(rev: str, folder: Path) -> Path:
    """The grader package of ``rev``, extracted under ``folder``: the root to import it from."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "grader"], check=True, capture_output=True
    ).stdout
    root = folder / "revision"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    return root


def _timed(root: Path, capture: Path, images: Path, allowed: frozenset[str]) -> float:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNNER,
            str(root),
            str(capture),
            str(images),
            ",".join(sorted(allowed)),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--against", help="a git revision whose evaluator is timed beside this one")
    args = parser.parse_args()
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    from test_evaluator import Net, _capture

    from grader.evaluator.key import read_images
    from grader.evaluator.ops import RUNNABLE
    from grader.intake.dataset import prepare
    from grader.model.dataset import TEST_IMAGES

    images_path = prepare(allow_download=False).raw / TEST_IMAGES  # `make data` puts it there
    images = read_images(images_path)
    with tempfile.TemporaryDirectory() as folder:
        capture = Path(folder) / "capture.bin"
        normalized = ((images.float() / 255 - 0.286) / 0.353).reshape(-1, 1, 28, 28)
        capture.write_bytes(_capture(Net(), normalized))
        contenders = {"this": ROOT}
        if args.against:
            contenders[args.against] = _revision(args.against, Path(folder))
        times: dict[str, list[float]] = {name: [] for name in contenders}
        allowed = RUNNABLE - {"sym_size", "_assert_tensor_metadata"}  # what every revision allows
        for _ in range(args.runs):
            for name, root in contenders.items():
                times[name].append(_timed(root, capture, images_path, allowed))
    for name, seconds in times.items():
        print(
            f"{name}: median {statistics.median(seconds):.2f} s over {args.runs} runs "
            f"({', '.join(f'{s:.2f}' for s in seconds)})"
        )


if __name__ == "__main__":
    main()
