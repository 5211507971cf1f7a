"""What the recomputation adds to a graded run, against the bare run of the same notebook.

Three numbers, each a median of several runs in this one invocation:
- the bare run: `jupyter nbconvert --to notebook --execute` of the notebook (default: the template)
  in a folder whose data/ is the prepared FashionMNIST, as `bench_run.py` runs it;
- the kernel's side: `grader/probe/capture.py` capturing a graded pass of the reference
  solution's model (three Linear layers, BatchNorm, Dropout) over the 10,000 real test images
  (torch.export, the weights and inputs as raw bytes, the file written);
- the grader's side after the run: the evaluator (`grader/evaluator/`), started beforehand as
  the grader starts it, handed the capture, until its answer (rebuild, re-run, verify every row).
The cost ratio is (bare + capture + evaluation) / bare.

Usage: python benchmarks/bench_recompute.py [NOTEBOOK] [--runs N]
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
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _bare(notebook: Path, dataset_root: Path) -> float:
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        (work / "data").symlink_to(dataset_root)
        shutil.copy(notebook, work / notebook.name)
        start = time.perf_counter()
        subprocess.run(
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
            cwd=work,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - start


def _model() -> object:
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.bn1 = nn.Linear(784, 512), nn.BatchNorm1d(512)
            self.fc2, self.bn2 = nn.Linear(512, 256), nn.BatchNorm1d(256)
            self.fc3, self.drop = nn.Linear(256, 10), nn.Dropout(0.2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.view(-1, 784)
            x = self.drop(torch.relu(self.bn1(self.fc1(x))))
            x = self.drop(torch.relu(self.bn2(self.fc2(x))))
            return self.fc3(x)

    return Net().eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "notebook", nargs="?", default=str(ROOT / "reference" / "HW3_template.ipynb")
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from grader.intake.dataset import prepare
    from grader.model.dataset import TEST_IMAGES
    from grader.probe.capture import Snapshot, capture, write
    from grader.run.evaluate import Evaluator

    dataset = prepare()
    images = dataset.raw / TEST_IMAGES
    raw = images.read_bytes()[16:]
    pixels = torch.frombuffer(bytearray(raw), dtype=torch.uint8).reshape(-1, 1, 28, 28)
    inputs = [
        ((pixels[i : i + 1000].float() / 255) - 0.2860) / 0.3530
        for i in range(0, pixels.shape[0], 1000)
    ]
    model = _model()
    with torch.no_grad():
        classes = [model(x).argmax(1).to(torch.int8) for x in inputs]
    bare, kernel, grader, rows = [], [], [], 0
    for _ in range(args.runs):
        bare.append(_bare(Path(args.notebook).resolve(), dataset.root))
        evaluator = Evaluator(images)  # started before the run, as run_submission does
        start = time.perf_counter()
        graded = SimpleNamespace(snapshot=Snapshot(model), inputs=inputs, row_classes=classes)
        manifest, payload = capture(graded, model, SimpleNamespace(internal=False))
        with tempfile.TemporaryDirectory() as folder:
            write(str(Path(folder) / "capture.bin"), manifest, payload)
            data = (Path(folder) / "capture.bin").read_bytes()
        kernel.append(time.perf_counter() - start)
        time.sleep(5)  # the evaluator's imports overlap the notebook's run
        start = time.perf_counter()
        answer = evaluator.finish(data)
        grader.append(time.perf_counter() - start)
        if (
            answer.output is None
            or '"official"' not in answer.output
            or '"refused"' in answer.output
        ):
            raise SystemExit(
                f"the evaluator did not recompute: {answer.problem or (answer.output or '')[:300]}"
            )
        rows = answer.output.count(",")  # a sanity figure: the answer lists every row
    b, k, g = statistics.median(bare), statistics.median(kernel), statistics.median(grader)
    print(
        f"{Path(args.notebook).name}, {args.runs} runs each ({len(data) / 1e6:.1f} MB capture, "
        f"answer of ~{rows} fields):"
    )
    print(f"  bare run            median {b:6.1f} s  {sorted(round(t, 1) for t in bare)}")
    print(f"  capture (kernel)    median {k:6.2f} s  {sorted(round(t, 2) for t in kernel)}")
    print(f"  evaluation (grader) median {g:6.2f} s  {sorted(round(t, 2) for t in grader)}")
    print(f"  cost ratio (bare + capture + evaluation) / bare: {(b + k + g) / b:.3f}")


if __name__ == "__main__":
    main()
