"""Run one submission, cell by cell, in a real Jupyter kernel (a child process) -> ExecutionRecord.

The only place that runs student code. The grader's process drives the kernel with nbclient
and reads back plain files; it never imports what the notebook defined.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from grader.data import Dataset
from grader.results import ExecutionRecord, Status
from grader.submission import Submission

PROBE_FILE = "grader_probe.json"
EXECUTED_FILE = "executed.ipynb"
KERNEL_LOG = "kernel.log"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CELL_LINE = re.compile(r"Cell In\[\d+\], line (\d+)")


@dataclass(frozen=True)
class RunPlan:
    """How to run one submission: where, on which data, with which seed and limits."""

    workdir: Path
    dataset: Dataset
    seed: int
    cell_timeout_s: float
    total_timeout_s: float
    num_classes: int = 10
    kernel_name: str = "python3"


def build_notebook(submission: Submission) -> NotebookNode:
    """The submission as a v4 notebook (a .py becomes one code cell per exported cell)."""
    notebook = nbformat.v4.new_notebook()
    makers = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    notebook.cells = [makers.get(c.kind, nbformat.v4.new_raw_cell)(c.source) for c in submission.cells]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebook


def _probe_cells(plan: RunPlan) -> tuple[NotebookNode, NotebookNode]:
    config = {
        "seed": plan.seed,
        "data_root": str(plan.dataset.root),
        "output": str(plan.workdir / PROBE_FILE),
        "num_classes": plan.num_classes,
    }
    setup = f"import grader.probe.runtime as _gp\n_gp.install(__import__('json').loads({json.dumps(config)!r}))\ndel _gp"
    export = "import grader.probe.runtime as _gp\n_gp.export()\ndel _gp"
    return nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(export)


def _where(submission: Submission, number: int, line: int | None) -> str:
    cell = next(c for c in submission.cells if c.number == number)
    return submission.where(cell, line)


def _error_line(error: CellExecutionError) -> int | None:
    match = _CELL_LINE.search(_ANSI.sub("", error.traceback or ""))
    return int(match.group(1)) if match else None


def _printed_text(cells: list[NotebookNode]) -> str:
    parts: list[str] = []
    for cell in cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                parts.append(str(output.get("text", "")))
            elif output.get("output_type") in ("execute_result", "display_data"):
                parts.append(str(output.get("data", {}).get("text/plain", "")) + "\n")
    return "".join(parts)


def _kernel_env(plan: RunPlan) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = str(plan.seed)
    env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    return env


def execute(submission: Submission, plan: RunPlan) -> ExecutionRecord:
    """Run the submission's cells in order with per-cell and total time limits.

    An exception in a student cell stops the run (like `jupyter nbconvert --execute`), but the
    probe still exports what it recorded, so the TA sees the accuracy reached before the error.
    """
    plan.workdir.mkdir(parents=True, exist_ok=True)
    setup, export = _probe_cells(plan)
    notebook = build_notebook(submission)
    student_cells = list(notebook.cells)
    notebook.cells = [setup, *student_cells, export]
    client = NotebookClient(
        notebook,
        timeout=int(plan.cell_timeout_s),
        kernel_name=plan.kernel_name,
        resources={"metadata": {"path": str(plan.workdir)}},
        allow_errors=False,
        record_timing=False,
    )
    started = time.monotonic()
    status, reason, failed = Status.GRADED, None, None
    log = (plan.workdir / KERNEL_LOG).open("wb")  # the kernel's own stderr, kept out of the TA's terminal
    with log, client.setup_kernel(env=_kernel_env(plan), stdout=log, stderr=log):
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            number = submission.cells[index - 1].number if 0 < index <= len(student_cells) else None
            remaining = plan.total_timeout_s - (time.monotonic() - started)
            client.timeout = max(1, int(min(plan.cell_timeout_s, remaining)))
            is_export = index == len(notebook.cells) - 1
            if status is not Status.GRADED and not is_export:
                continue
            try:
                client.execute_cell(cell, index)
            except CellTimeoutError:
                limit = "total" if remaining < plan.cell_timeout_s else "per-cell"
                status, failed = Status.TIMEOUT, number
                reason = f"{_where(submission, number, None) if number else 'the grader'}: still running at the {limit} time limit ({client.timeout} s)"
                break
            except DeadKernelError:
                status, failed = Status.ERROR, number
                where = _where(submission, number, None) if number else "the grader's export"
                reason = f"{where}: the kernel died (a crash, os._exit, or out of memory)"
                break
            except CellExecutionError as exc:
                if number is None:  # the grader's own cells
                    status, reason = Status.ERROR, f"grader probe failed in the kernel: {exc.ename}: {exc.evalue}"
                    break
                status, failed = Status.ERROR, number
                reason = f"{_where(submission, number, _error_line(exc))}: {exc.ename}: {exc.evalue}"
    duration = time.monotonic() - started
    notebook.cells = student_cells
    executed = plan.workdir / EXECUTED_FILE
    nbformat.write(notebook, str(executed))
    probe = plan.workdir / PROBE_FILE
    return ExecutionRecord(
        status=status,
        reason=reason,
        failed_cell=failed,
        duration_s=round(duration, 2),
        executed_notebook=executed,
        probe_file=probe if probe.is_file() else None,
        outputs_text=_printed_text(student_cells),
    )
