"""The legal corpus (tests/fixtures/legal/) graded as one class, sandboxed, two jobs at a time, with
the test labels visible: per notebook its status, flags, the grader's measured accuracy and the
notebook's own printed count, and the graded model's accuracy on a secret sample of the training
images (all of it, the images it trained on, those it held out: judge/fit.py). With ``--bare`` each
notebook also runs without the grader (the same
kernel, seeded as the probe seeds it and with the graded run's threads, the data in its ``data/``
folder), and its
printed output is compared with the graded run's, line by line, timings left out.

Usage: python benchmarks/legal_corpus.py [--data real|tiny] [--bare] [--out DIR] [NAME ...]
Writes DIR/legal_corpus.md (a Markdown table) and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import yaml
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "legal"
sys.path.insert(0, str(ROOT / "tests"))

from grader.intake.read import read_submission  # noqa: E402
from grader.model.context import Context  # noqa: E402
from grader.model.dataset import Dataset  # noqa: E402
from grader.model.rubric import load_rubric  # noqa: E402
from grader.pipeline.batch import grade_directory  # noqa: E402
from grader.pipeline.executors.local import LocalExecutor  # noqa: E402
from grader.run.execute import build_notebook  # noqa: E402
from grader.run.sandbox import unavailable_reason  # noqa: E402
from grader.run.slots import plan_slots  # noqa: E402
from grader.static.reference import derive_facts  # noqa: E402

PRINTED = re.compile(r"Test Accuracy: ([0-9.]+)% \((\d+)/(\d+)\)")
TIMING = re.compile(r"\d+(\.\d+)?\s*(s|sec|secs|seconds|ms)\b|it/s|s/it|\[grader\]", re.IGNORECASE)


def _printed(notebook: Any) -> list[str]:
    """The stream lines a notebook printed, timings and the grader's own notices left out."""
    lines = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                lines += [
                    line for line in output.get("text", "").splitlines() if not TIMING.search(line)
                ]
    return lines


def _bare(name: str, data: Path, seed: int, threads: int, folder: Path) -> list[str]:
    """The notebook run without the grader, seeded and threaded as the probe would."""
    work = folder / f"bare-{Path(name).stem}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    (work / "data" / "FashionMNIST").symlink_to(data / "FashionMNIST")
    notebook = build_notebook(read_submission(CORPUS / name))
    prelude = (
        f"import random, numpy, torch\nrandom.seed({seed}); numpy.random.seed({seed}); "
        f"torch.manual_seed({seed})\n"
        "torch.backends.cudnn.deterministic = True; torch.backends.cudnn.benchmark = False\n"
        f"torch.set_num_threads({threads})"
    )
    notebook.cells.insert(0, nbformat.v4.new_code_cell(prelude))
    NotebookClient(
        notebook, timeout=3600, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    ).execute()
    return _printed(notebook)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("real", "tiny"), default="real")
    parser.add_argument(
        "--bare", action="store_true", help="also run each notebook without the grader and compare"
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/legal-corpus"))
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    expected = yaml.safe_load((CORPUS / "expected.yaml").read_text())
    names = args.names or sorted(expected)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data == "tiny":
        from tinydata import make_tiny_fashion_mnist

        dataset = Dataset(make_tiny_fashion_mnist(args.out / "tiny-fmnist", noise=0.25))
    else:
        dataset = Dataset(Path.home() / ".cache" / "grader" / "fashion-mnist")
    rubric = load_rubric(ROOT / "rubric.yaml")
    context = dataclasses.replace(
        Context(rubric, derive_facts(rubric.template), dataset),
        sandboxed=unavailable_reason() is None,
    )
    folder = args.out / "class"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for name in names:
        shutil.copy(CORPUS / name, folder / name)
    started = time.time()
    slots = plan_slots(2, 2, (), 1, 1)
    summary = grade_directory(
        folder, args.out / "graded", context, LocalExecutor(slots), force=True
    )
    took = time.time() - started
    rows = [
        "| notebook | status | flags | measured | its own count | training images: all / "
        "trained / held out | same output without the grader |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in sorted(summary.results, key=lambda r: r.source):
        executed = nbformat.read(
            str(args.out / "graded" / "executed" / f"{result.student}.ipynb"), as_version=4
        )
        graded_lines = _printed(executed)
        own = next((m for line in reversed(graded_lines) if (m := PRINTED.search(line))), None)
        same = "not run"
        if args.bare:
            # as many torch threads as the graded run had (its slot's): another count sums in
            # another order
            bare_lines = _bare(
                result.source, dataset.raw.parent.parent, rubric.seed, slots[0].threads, args.out
            )
            same = (
                "yes"
                if bare_lines == graded_lines
                else (f"no ({sum(a != b for a, b in zip(bare_lines, graded_lines))} lines differ)")
            )
        measured = (
            f"{result.accuracy:.2f}% ({result.correct}/{result.total})"
            if result.accuracy is not None
            else "-"
        )
        counted = f"{own.group(1)}% ({own.group(2)}/{own.group(3)})" if own else "-"
        fit = result.fit
        fitted = (
            " / ".join(
                "-" if a is None else f"{a:.2f}%"
                for a in (fit.sample_accuracy, fit.trained_accuracy, fit.held_out_accuracy)
            )
            if fit
            else "-"
        )
        rows.append(
            f"| {result.source} | {result.status.value} | {', '.join(result.flags) or '-'} "
            f"| {measured} | {counted} | {fitted} | {same} |"
        )
    table = "\n".join(rows) + (
        f"\n\n{len(summary.results)} notebooks, {args.data} data, graded in {took:.0f} s\n"
    )
    (args.out / "legal_corpus.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
