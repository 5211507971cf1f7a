"""Command line: parse arguments, call the library, map errors to exit codes. Nothing else."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Collection
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

from grader.model.errors import GraderError
from grader.model.rubric import load_rubric

if TYPE_CHECKING:
    from grader.pipeline.commands import Setup


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # a rule is violated or the run failed
    USAGE = 2  # bad arguments or input
    INTERNAL = 3  # a bug in the grader: shown with its traceback


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(ExitCode.USAGE, f"grader: {message} (see grader --help)\n")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grader")
    except PackageNotFoundError:
        return "(not installed)"


RUBRIC_HELP = (
    "rubric.yaml to grade with, or a homework's folder holding one (homeworks/hw4-cnn); "
    "default: ./rubric.yaml, else the shipped HW3 one"
)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="grader",
        description="Grade deep-learning homework notebooks by their rubric (default: HW3).",
    )
    parser.add_argument("--version", action="version", version=f"grader {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--rubric",
            type=Path,
            help=RUBRIC_HELP,
        )
        sub.add_argument(
            "--data",
            type=Path,
            metavar="DIR",
            help="folder with the rubric's dataset files (default: the prepared cache)",
        )
        sub.add_argument(
            "--timeout",
            type=float,
            metavar="SECONDS",
            help="time limit for a whole notebook (overrides the rubric)",
        )
        sub.add_argument(
            "--no-sandbox",
            action="store_true",
            help="run notebooks without bubblewrap isolation (only for code you trust)",
        )

    check = commands.add_parser("check", help="check one notebook or script before submitting")
    check.add_argument(
        "paths",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="the .ipynb (or Colab-exported .py); with --package, the folder or the three files",
    )
    check.add_argument(
        "--run", action="store_true", help="also run it, measure the accuracy and score it"
    )
    check.add_argument(
        "--package",
        action="store_true",
        help="also check what the TA receives: the three file names, the .py against the .ipynb, "
        'and the report PDF\'s "Best accuracy" line',
    )
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    common(check)

    grade = commands.add_parser("grade", help="grade a folder of submissions (the TA's batch)")
    grade.add_argument(
        "directory",
        type=Path,
        help="folder (or .zip, or the mails: an .mbox file "
        "or a folder of .eml files) holding HW3_<account>.ipynb/.py files",
    )
    grade.add_argument(
        "--out", type=Path, required=True, help="where results, gradebook.csv and pages go"
    )
    grade.add_argument(
        "--jobs",
        type=int,
        metavar="N",
        help="submissions graded at once (default: "
        "--per-gpu per GPU, else cores / the rubric's cpu_threads)",
    )
    grade.add_argument(
        "--gpus",
        metavar="LIST",
        help="GPUs to use by nvidia-smi index or UUID, "
        "e.g. 0,1 (default: all visible; 'none' for CPU)",
    )
    grade.add_argument(
        "--per-gpu",
        type=int,
        default=1,
        metavar="K",
        help="submissions sharing one GPU (default 1)",
    )
    grade.add_argument(
        "--force", action="store_true", help="grade again even where a cached result matches"
    )
    grade.add_argument(
        "--only",
        metavar="ACCOUNT[,ACCOUNT]",
        help="grade (again) just these accounts; the gradebook and pages keep everyone in OUT",
    )
    grade.add_argument(
        "--borderline-seeds",
        type=int,
        default=0,
        metavar="K",
        help="run each result within the rubric's borderline_margin of a threshold "
        "again with K more seeds; the rubric's seed_policy decides its points (default 0: off)",
    )
    grade.add_argument(
        "--overrides",
        type=Path,
        metavar="FILE",
        help="the TA's points, bonus, report points and notes per account (default: "
        "OUT/overrides.yaml)",
    )
    grade.add_argument(
        "--roster",
        type=Path,
        metavar="FILE",
        help="CSV mapping accounts to LMS identities: writes OUT/canvas.csv and/or OUT/moodle.csv",
    )
    grade.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where submissions run: this machine (default), or a Ray cluster (needs grader[ray])",
    )
    grade.add_argument(
        "--address",
        metavar="ADDR",
        help="the Ray cluster's head, e.g. "
        "10.0.0.5:6379 (default: $RAY_ADDRESS, else a Ray instance started here)",
    )
    common(grade)

    ci = commands.add_parser(
        "ci",
        help="grade the submission in a repository on CI (GitHub "
        "Actions and Classroom, GitLab, Jenkins)",
    )
    ci.add_argument(
        "path",
        type=Path,
        nargs="?",
        default=Path("."),
        metavar="PATH",
        help="the repository holding HW3_<account>.ipynb (or .py) (default: .)",
    )
    ci.add_argument(
        "--static", action="store_true", help="only the static rule checks (no run, no points)"
    )
    ci.add_argument(
        "--junit", type=Path, metavar="FILE", help="also write JUnit XML here (GitLab, Jenkins)"
    )
    common(ci)

    report = commands.add_parser(
        "report",
        help="render the gradebook and pages again from OUT's "
        "results and overrides, running nothing",
    )
    report.add_argument("out", type=Path, metavar="OUT", help="the folder a `grader grade` wrote")
    report.add_argument(
        "--overrides", type=Path, metavar="FILE", help="default: OUT/overrides.yaml"
    )
    report.add_argument(
        "--roster", type=Path, metavar="FILE", help="CSV mapping accounts to LMS identities"
    )
    report.add_argument("--rubric", type=Path, help=RUBRIC_HELP)

    scope = commands.add_parser(
        "gradescope", help="build the Gradescope autograder zip (or, inside Gradescope, grade)"
    )
    scope.add_argument(
        "zip", type=Path, nargs="?", metavar="OUT.zip", help="where to write the autograder zip"
    )
    scope.add_argument(
        "--wheel",
        type=Path,
        metavar="FILE",
        help="the grader wheel to ship (default: built from this checkout)",
    )
    scope.add_argument(
        "--autograder",
        type=Path,
        metavar="ROOT",
        help="grade ROOT/submission and write ROOT/results/results.json (run_autograder does this)",
    )
    common(scope)

    env = commands.add_parser(
        "env", help="list the modules the submissions need that are missing here"
    )
    env.add_argument("directory", type=Path, help="folder (or .zip) of submissions")
    env.add_argument(
        "--install", action="store_true", help="pip install the missing ones the rubric allows"
    )
    env.add_argument("--rubric", type=Path, help=RUBRIC_HELP)

    draft = commands.add_parser(
        "rubric", help="derive a homework's frozen facts from its template and write a rubric draft"
    )
    draft.add_argument(
        "template", type=Path, metavar="TEMPLATE", help="the handout (.ipynb or .py)"
    )
    draft.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="where to write the draft (default: rubric.draft.yaml beside TEMPLATE)",
    )
    draft.add_argument("--force", action="store_true", help="overwrite FILE if it exists")

    data = commands.add_parser(
        "data", help="prepare and verify the rubric's dataset (default: FashionMNIST); say where"
    )
    data.add_argument("--rubric", type=Path, help=RUBRIC_HELP)
    data.add_argument(
        "--from",
        dest="source",
        type=Path,
        metavar="DIR",
        help="folder with the dataset's files (FashionMNIST's four IDX files, .gz or not; "
        "CIFAR10's python batches)",
    )
    data.add_argument(
        "--cache", type=Path, help="where to keep the prepared copy (default: ~/.cache/grader)"
    )
    return parser


def _say(text: str) -> None:
    print(f"grader: {text}", file=sys.stderr)


def _setup(args: argparse.Namespace) -> Setup:
    from grader.pipeline import commands

    return commands.Setup(args.rubric, args.data, args.timeout, args.no_sandbox)


def _check(args: argparse.Namespace) -> ExitCode:
    from grader.outputs.text import check_text
    from grader.pipeline import commands

    checked = commands.check(args.paths, _setup(args), args.run, args.package, _say)
    package = checked.package
    if args.json:
        record = checked.result.to_json()
        if package is not None:
            record["package"] = {
                "files": {k: p.name for k, p in package.files.items()},
                "problems": list(package.problems),
                "notes": list(package.notes),
                "report_accuracy": package.headline.accuracy if package.headline else None,
            }
        print(json.dumps(record, indent=2))
    else:
        print(
            check_text(checked.result, checked.rubric, checked.how, checked.notices, package),
            end="",
        )
    return ExitCode.OK if checked.ok else ExitCode.FAILED


def _grade(args: argparse.Namespace) -> ExitCode:
    from grader.outputs.exports import load_roster
    from grader.outputs.progress import progress_display
    from grader.outputs.text import render
    from grader.pipeline import commands
    from grader.pipeline.batch import grade_directory
    from grader.scoring.overrides import for_batch

    if args.borderline_seeds < 0:
        raise GraderError("--borderline-seeds must be 0 (off) or more")
    context = commands.batch_context(_setup(args), _say)
    placement = commands.Placement(args.jobs, args.gpus, args.per_gpu)
    overrides = for_batch(args.out, args.overrides, context.rubric)
    started = time.monotonic()
    with (
        commands.executor_of(
            args.executor, args.address, placement, context.rubric, _say
        ) as executor,
        progress_display(sys.stdout, executor.width) as show,
    ):
        summary = grade_directory(
            args.directory,
            args.out,
            context,
            executor,
            show,
            force=args.force,
            overrides=overrides,
            roster=load_roster(args.roster) if args.roster else None,
            borderline_seeds=args.borderline_seeds,
            only=_accounts(args.only),
        )
    counts = sorted(Counter(r.status.value for r in summary.results).items())
    print(
        render(
            "summary.txt.j2",
            results=summary.results,
            skipped=summary.skipped,
            out=args.out,
            cached=summary.cached,
            seconds=time.monotonic() - started,
            counts=counts,
        ).rstrip("\n")
    )
    _wrote(args.out, overrides, args.overrides, graded=True, roster=args.roster is not None)
    for line in summary.warnings[1:]:
        _say(line)
    return ExitCode.OK


def _wrote(
    out: Path, overrides: Collection[str], given: Path | None, graded: bool, roster: bool
) -> None:
    """The closing lines: each file the command wrote in OUT, and the overrides it applied."""
    from grader.outputs.pages import written
    from grader.outputs.text import render
    from grader.scoring.overrides import FILE

    source = given or out / FILE
    print(
        render(
            "wrote.txt.j2",
            w=written(out, graded, roster),
            overrides=sorted(overrides),
            overrides_file=source,
            overrides_found=source.is_file(),
        ).rstrip("\n")
    )


def _accounts(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    accounts = frozenset(a.strip() for a in text.split(",") if a.strip())
    if not accounts:
        raise GraderError("--only needs one or more accounts, e.g. --only s001,s002")
    return accounts


def _ci(args: argparse.Namespace) -> ExitCode:
    from grader.outputs import ci
    from grader.pipeline import commands

    environment = ci.CiEnvironment.of(os.environ, Path.cwd())
    outcome, how = commands.ci(args.path, _setup(args), args.static, environment.workspace, _say)
    ci.publish(outcome, environment, sys.stdout, how, args.junit)
    if args.junit is not None:  # on stderr: stdout is the text `grader check` prints
        _say(f"wrote {args.junit}: JUnit XML, a test case per rule and one for the accuracy band")
    return ExitCode.OK if outcome.passed else ExitCode.FAILED


def _report(args: argparse.Namespace) -> ExitCode:
    from grader.outputs.exports import load_roster
    from grader.outputs.pages import rerender
    from grader.scoring.overrides import for_batch

    if not (args.out / "results").is_dir():
        raise GraderError(
            f"{args.out}: no results/ folder; give the OUT of a `grader grade DIR --out OUT`"
        )
    rubric = load_rubric(args.rubric)
    roster = load_roster(args.roster) if args.roster else None
    overrides = for_batch(args.out, args.overrides, rubric)
    said = rerender(args.out, rubric, overrides, roster)
    print(f"{said[0]} rendered again")
    _wrote(args.out, overrides, args.overrides, graded=False, roster=args.roster is not None)
    for line in said[1:]:
        _say(line)
    return ExitCode.OK


def _gradescope(args: argparse.Namespace) -> ExitCode:
    from grader.pipeline import commands

    if (args.zip is None) == (args.autograder is None):
        raise GraderError(
            "give OUT.zip to build the autograder, or --autograder ROOT to grade inside Gradescope"
        )
    if args.zip is not None:
        commands.autograder_zip(args.zip, _setup(args), args.wheel)
        print(
            f"Gradescope autograder written to {args.zip}; upload it as the assignment's "
            "autograder (README: Gradescope)"
        )
        return ExitCode.OK
    print(commands.autograder(args.autograder, _setup(args))["output"])
    return ExitCode.OK


def _env(args: argparse.Namespace) -> ExitCode:
    from grader.outputs.text import render
    from grader.pipeline import commands

    found = commands.needs(args.directory, load_rubric(args.rubric))
    print(
        render(
            "env.txt.j2",
            needs=found.needs,
            missing=found.missing,
            allowed=found.allowed,
            install=args.install,
        ),
        end="",
    )
    if args.install and found.installable:
        commands.install(found.installable)
        return ExitCode.OK
    return ExitCode.FAILED if found.missing else ExitCode.OK


def _rubric(args: argparse.Namespace) -> ExitCode:
    from grader.pipeline import commands

    drafted = commands.rubric_draft(args.template, args.out, args.force)
    for line in drafted.lines:
        print(line)
    print(f"wrote {drafted.path}: a rubric draft; set its accuracy levels, then use it as --rubric")
    return ExitCode.OK


def _data(args: argparse.Namespace) -> ExitCode:
    from grader.intake.dataset import prepare
    from grader.model.rubric import load_rubric

    choice = load_rubric(args.rubric).dataset
    dataset = prepare(args.source, args.cache, choice=choice)
    print(f"{choice.name} ready and verified at {dataset.raw}")
    return ExitCode.OK


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed as one line
        return int(exc.code or 0)
    handlers = {
        "check": _check,
        "grade": _grade,
        "ci": _ci,
        "gradescope": _gradescope,
        "report": _report,
        "env": _env,
        "rubric": _rubric,
        "data": _data,
    }
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
