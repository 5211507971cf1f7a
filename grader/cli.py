"""Command line: parse arguments, call the library, map errors to exit codes. Nothing else."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import traceback
import tempfile
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

from grader.errors import GraderError
from grader.results import Result, Status
from grader.rubric import Rubric, load_rubric

if TYPE_CHECKING:
    from grader.grade import Context


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # a rule is violated or the run failed
    USAGE = 2  # bad arguments or input
    INTERNAL = 3  # a bug in the grader: shown with its traceback


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(ExitCode.USAGE, f"grader: {message} (see grader --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="grader", description="Grade deep-learning homework notebooks (HW3, FashionMNIST).")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--rubric", type=Path, help="rubric.yaml to grade with (default: ./rubric.yaml, else the shipped one)")
        sub.add_argument("--data", type=Path, metavar="DIR", help="folder with the four FashionMNIST IDX files (default: the prepared cache)")
        sub.add_argument("--timeout", type=float, metavar="SECONDS", help="time limit for a whole notebook (overrides the rubric)")
        sub.add_argument("--no-sandbox", action="store_true",
                         help="run notebooks without bubblewrap isolation (only for code you trust)")

    check = commands.add_parser("check", help="check one notebook or script before submitting")
    check.add_argument("path", type=Path, help="the .ipynb (or Colab-exported .py)")
    check.add_argument("--run", action="store_true", help="also run it, measure the accuracy and score it")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    common(check)

    grade = commands.add_parser("grade", help="grade a folder of submissions (the TA's batch)")
    grade.add_argument("directory", type=Path, help="folder holding HW3_<account>.ipynb/.py files")
    grade.add_argument("--out", type=Path, required=True, help="where results, gradebook.csv and pages go")
    common(grade)

    data = commands.add_parser("data", help="prepare and verify FashionMNIST; say where it is")
    data.add_argument("--from", dest="source", type=Path, metavar="DIR", help="folder with the four IDX files (.gz or not)")
    data.add_argument("--cache", type=Path, help="where to keep the prepared copy (default: ~/.cache/grader)")
    return parser


def _rubric(args: argparse.Namespace) -> Rubric:
    rubric = load_rubric(args.rubric)
    if args.timeout is not None:
        if args.timeout <= 0:
            raise GraderError("--timeout must be a positive number of seconds")
        limits = dataclasses.replace(rubric.limits, total_timeout_s=args.timeout,
                                     cell_timeout_s=min(rubric.limits.cell_timeout_s, args.timeout))
        rubric = dataclasses.replace(rubric, limits=limits)
    return rubric


def _context(args: argparse.Namespace, run: bool, sandboxed: bool = False) -> Context:
    from grader.data import prepare
    from grader.grade import Context
    from grader.reference import derive_facts

    rubric = _rubric(args)
    return Context(rubric, derive_facts(rubric.template), prepare(args.data) if run else None, sandboxed)


def _sandbox_reason(args: argparse.Namespace) -> str | None:
    """Why runs will not be sandboxed (None: they will be)."""
    from grader.sandbox import unavailable_reason

    return "--no-sandbox was given" if args.no_sandbox else unavailable_reason()


def _check(args: argparse.Namespace) -> ExitCode:
    from grader.grade import grade_submission
    from grader.report import check_text
    from grader.submission import read_submission

    unsandboxed = _sandbox_reason(args) if args.run else None
    if unsandboxed:  # a student's own code on their own machine: fine, but say so
        print(f"grader: running without a sandbox ({unsandboxed})", file=sys.stderr)
    context = _context(args, args.run, sandboxed=args.run and unsandboxed is None)
    path: Path = args.path
    matched = context.rubric.files.account_of(path.name)
    notices = () if matched else (f"the file name should be {context.rubric.files.notebook} (or .py) when you submit",)
    submission = read_submission(path, matched[0] if matched else None)
    with tempfile.TemporaryDirectory(prefix="grader-check-") as work:
        result = grade_submission(submission, context, Path(work))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(check_text(result, args.run, notices), end="")
    return ExitCode.OK if result.status is Status.GRADED else ExitCode.FAILED


def _grade(args: argparse.Namespace) -> ExitCode:
    from grader.batch import grade_directory

    unsandboxed = _sandbox_reason(args)
    if unsandboxed and not args.no_sandbox:
        raise GraderError(f"a batch of other people's code needs the sandbox, and {unsandboxed}; "
                          "or pass --no-sandbox to run it unisolated")
    context = _context(args, run=True, sandboxed=unsandboxed is None)

    def progress(result: Result) -> None:
        accuracy = f"{result.accuracy:.2f}%" if result.accuracy is not None else "-"
        print(f"{result.student:<20} {result.status.value:<9} {accuracy:>7}  {result.score}/{result.max_score}"
              f"{' +' + str(result.bonus) if result.bonus else ''}  {result.reason or ''}", flush=True)

    summary = grade_directory(args.directory, args.out, context, progress)
    for name, why in summary.skipped:
        print(f"skipped {name}: {why}")
    print(f"{len(summary.results)} graded into {args.out}/ (gradebook.csv, index.html, results/, students/, executed/)")
    return ExitCode.OK


def _data(args: argparse.Namespace) -> ExitCode:
    from grader.data import prepare

    dataset = prepare(args.source, args.cache)
    print(f"FashionMNIST ready and verified at {dataset.raw}")
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return int(exc.code or 0)
    handlers = {"check": _check, "grade": _grade, "data": _data}
    try:
        return int(handlers[args.command](args))
    except GraderError as exc:
        print(f"grader: {exc}", file=sys.stderr)
        return int(ExitCode.USAGE)
    except KeyboardInterrupt:
        print("grader: interrupted", file=sys.stderr)
        return int(ExitCode.FAILED)
    except Exception:  # noqa: BLE001 - a grader bug: show it whole
        traceback.print_exc()
        return int(ExitCode.INTERNAL)


def console_main() -> None:
    """Entry point of the `grader` console script."""
    sys.exit(main())
