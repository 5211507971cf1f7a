"""Command line: parse arguments, call the library, map errors to exit codes. Nothing else."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING

from grader.errors import GraderError
from grader.results import Status
from grader.rubric import Rubric, load_rubric

if TYPE_CHECKING:
    from grader.executor import Executor
    from grader.grade import Context
    from grader.slots import Slot


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
    check.add_argument("paths", type=Path, nargs="+", metavar="PATH",
                       help="the .ipynb (or Colab-exported .py); with --package, the folder or the three files")
    check.add_argument("--run", action="store_true", help="also run it, measure the accuracy and score it")
    check.add_argument("--package", action="store_true",
                       help="also check what the TA receives: the three file names, the .py against the .ipynb, "
                            "and the report PDF's \"Best accuracy\" line")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    common(check)

    grade = commands.add_parser("grade", help="grade a folder of submissions (the TA's batch)")
    grade.add_argument("directory", type=Path, help="folder (or .zip, or the mails: an .mbox file or a folder of .eml "
                                                    "files) holding HW3_<account>.ipynb/.py files")
    grade.add_argument("--out", type=Path, required=True, help="where results, gradebook.csv and pages go")
    grade.add_argument("--jobs", type=int, metavar="N", help="submissions graded at once (default: --per-gpu per "
                                                             "GPU, else cores / the rubric's cpu_threads)")
    grade.add_argument("--gpus", metavar="LIST", help="GPUs to use by nvidia-smi index or UUID, e.g. 0,1 "
                                                      "(default: all visible; 'none' for CPU)")
    grade.add_argument("--per-gpu", type=int, default=1, metavar="K", help="submissions sharing one GPU (default 1)")
    grade.add_argument("--force", action="store_true", help="grade again even where a cached result matches")
    grade.add_argument("--borderline-seeds", type=int, default=0, metavar="K",
                       help="run each result within the rubric's borderline_margin of a threshold again with K more "
                            "seeds; the rubric's seed_policy decides its points (default 0: off)")
    grade.add_argument("--overrides", type=Path, metavar="FILE",
                       help="the TA's points, bonus, report points and notes per account (default: OUT/overrides.yaml)")
    grade.add_argument("--roster", type=Path, metavar="FILE", help="CSV mapping accounts to LMS identities: writes "
                                                                   "OUT/canvas.csv and/or OUT/moodle.csv")
    grade.add_argument("--executor", choices=("local", "ray"), default="local",
                       help="where submissions run: this machine (default), or a Ray cluster (needs grader[ray])")
    grade.add_argument("--address", metavar="ADDR", help="the Ray cluster's head, e.g. 10.0.0.5:6379 "
                                                         "(default: $RAY_ADDRESS, else a Ray instance started here)")
    common(grade)

    ci = commands.add_parser("ci", help="grade the submission in a repository on CI (GitHub Actions and Classroom, "
                                        "GitLab, Jenkins)")
    ci.add_argument("path", type=Path, nargs="?", default=Path("."), metavar="PATH",
                    help="the repository holding HW3_<account>.ipynb (or .py) (default: .)")
    ci.add_argument("--static", action="store_true", help="only the static rule checks (no run, no points)")
    ci.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML here (GitLab, Jenkins)")
    common(ci)

    report = commands.add_parser("report", help="render the gradebook and pages again from OUT's results and "
                                                 "overrides, running nothing")
    report.add_argument("out", type=Path, metavar="OUT", help="the folder a `grader grade` wrote")
    report.add_argument("--overrides", type=Path, metavar="FILE", help="default: OUT/overrides.yaml")
    report.add_argument("--roster", type=Path, metavar="FILE", help="CSV mapping accounts to LMS identities")
    report.add_argument("--rubric", type=Path, help="rubric.yaml (default: ./rubric.yaml, else the shipped one)")

    scope = commands.add_parser("gradescope", help="build the Gradescope autograder zip (or, inside Gradescope, grade)")
    scope.add_argument("zip", type=Path, nargs="?", metavar="OUT.zip", help="where to write the autograder zip")
    scope.add_argument("--wheel", type=Path, metavar="FILE", help="the grader wheel to ship (default: built from this checkout)")
    scope.add_argument("--autograder", type=Path, metavar="ROOT",
                       help="grade ROOT/submission and write ROOT/results/results.json (run_autograder does this)")
    common(scope)

    env = commands.add_parser("env", help="list the modules the submissions need that are missing here")
    env.add_argument("directory", type=Path, help="folder (or .zip) of submissions")
    env.add_argument("--install", action="store_true", help="pip install the missing ones the rubric allows")
    env.add_argument("--rubric", type=Path, help="rubric.yaml (default: ./rubric.yaml, else the shipped one)")

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
    from grader.package import against_measured, inspect
    from grader.report import check_text
    from grader.submission import read_submission

    context, slot, how = _own_code(args, args.run)
    package = inspect(args.paths, context.rubric.files) if args.package else None
    if package is not None and package.main is None:
        raise GraderError("no notebook or script to check: " + "; ".join(package.problems))
    if package is None and len(args.paths) != 1:
        raise GraderError("give one notebook or script (or --package with the folder or the three files)")
    path: Path = package.main if package is not None and package.main else args.paths[0]
    matched = context.rubric.files.account_of(path.name)
    notices = () if matched else (f"the file name should be {context.rubric.files.notebook} (or .py) when you submit",)
    submission = read_submission(path, matched[0] if matched else None)
    with tempfile.TemporaryDirectory(prefix="grader-check-") as work:
        result = grade_submission(submission, context, Path(work), slot=slot)
    if package is not None and args.run:
        package = against_measured(package, result.accuracy, context.rubric.accuracy.mismatch_tolerance)
    if args.json:
        record = result.to_json()
        if package is not None:
            record["package"] = {"files": {k: p.name for k, p in package.files.items()}, "problems": list(package.problems),
                                 "notes": list(package.notes),
                                 "report_accuracy": package.headline.accuracy if package.headline else None}
        print(json.dumps(record, indent=2))
    else:
        print(check_text(result, context.rubric, how, notices, package), end="")
    ok = result.status is Status.GRADED and not (package is not None and package.problems)
    return ExitCode.OK if ok else ExitCode.FAILED


def _own_code(args: argparse.Namespace, run: bool) -> tuple[Context, Slot | None, str | None]:
    """Context, slot and the "ran:" line for one submission that is the user's own code (check, ci):
    without a sandbox it still runs, and says so. The slot has the rubric's threads, a GPU if there is one."""
    unsandboxed = _sandbox_reason(args) if run else None
    if unsandboxed:
        print(f"grader: running without a sandbox ({unsandboxed})", file=sys.stderr)
    context = _context(args, run, sandboxed=run and unsandboxed is None)
    _limits_notice(context.sandboxed)
    slot = _slots(args, context.rubric)[0] if run else None
    return context, slot, _how_it_ran(unsandboxed, slot) if run else None


def _how_it_ran(unsandboxed: str | None, slot: Slot | None) -> str:
    where = "in the sandbox" if unsandboxed is None else f"without a sandbox ({unsandboxed})"
    if slot is not None and slot.gpu is not None:
        return f"{where}, on GPU {slot.gpu} (the TA's run on other hardware can differ by a few tenths of a point)"
    return f"{where}, on the CPU ({slot.threads if slot else 1} threads)"


def _slots(args: argparse.Namespace, rubric: Rubric) -> tuple[Slot, ...]:
    from grader.gpus import find as find_gpu
    from grader.slots import plan_slots, visible_gpus

    jobs, gpus_arg, per_gpu = getattr(args, "jobs", 1), getattr(args, "gpus", None), getattr(args, "per_gpu", 1)
    if jobs is not None and jobs < 1 or per_gpu < 1:
        raise GraderError("--jobs and --per-gpu must be at least 1")
    gpus = visible_gpus() if gpus_arg is None else () if gpus_arg == "none" else tuple(
        g.strip() for g in gpus_arg.split(",") if g.strip())
    unknown = [g for g in gpus if find_gpu(g) is None]
    if unknown:
        raise GraderError(f"GPU {', '.join(unknown)} is not on this machine; give nvidia-smi's indices (or UUIDs) "
                          "like --gpus 0,1, or --gpus none")
    return plan_slots(jobs, len(os.sched_getaffinity(0)), gpus, per_gpu, rubric.cpu_threads)


def _limits_notice(sandboxed: bool) -> None:
    """Say once when the sandbox cannot cap a run's processes together (no writable cgroup)."""
    from grader.cgroups import find_hierarchy

    if not sandboxed:
        return
    hierarchy, why = find_hierarchy()
    if hierarchy is None:
        print(f"grader: note: {why}; memory is capped per process (RLIMIT_DATA), "
              "not for all of a notebook's processes together (run as root for cgroup limits)", file=sys.stderr)


def _executor(args: argparse.Namespace, rubric: Rubric) -> AbstractContextManager[Executor]:
    """The local executor over this machine's slots, or a connection to a Ray cluster."""
    if args.executor == "ray":
        from grader.ray_executor import RayPlan, ray_executor

        if args.jobs is not None or args.gpus not in (None, "none"):
            raise GraderError("with --executor ray, Ray places the jobs: drop --jobs and --gpus (or say --gpus none)")
        if args.per_gpu < 1:
            raise GraderError("--per-gpu must be at least 1")
        return ray_executor(args.address, RayPlan(rubric.cpu_threads, args.per_gpu, use_gpus=args.gpus != "none"))
    if args.address:
        raise GraderError("--address is for --executor ray")
    from grader.executor import LocalExecutor

    slots = _slots(args, rubric)
    cores = len(os.sched_getaffinity(0))
    if not any(s.gpu for s in slots) and len(slots) * rubric.cpu_threads > cores:
        print(f"grader: note: {len(slots)} jobs x {rubric.cpu_threads} threads on {cores} cores; "
              "runs will slow each other down", file=sys.stderr)
    return nullcontext(LocalExecutor(slots))


def _grade(args: argparse.Namespace) -> ExitCode:
    from grader.batch import grade_directory
    from grader.exports import load_roster
    from grader.overrides import for_batch
    from grader.progress import progress_display
    from grader.report import render

    if args.borderline_seeds < 0:
        raise GraderError("--borderline-seeds must be 0 (off) or more")
    unsandboxed = _sandbox_reason(args)
    if unsandboxed and not args.no_sandbox:
        raise GraderError(f"a batch of other people's code needs the sandbox, and {unsandboxed}; "
                          "or pass --no-sandbox to run it unisolated")
    context = _context(args, run=True, sandboxed=unsandboxed is None)
    _limits_notice(context.sandboxed)
    started = time.monotonic()
    with _executor(args, context.rubric) as executor, progress_display(sys.stdout, executor.width) as show:
        summary = grade_directory(args.directory, args.out, context, executor, show, force=args.force,
                                  overrides=for_batch(args.out, args.overrides, context.rubric),
                                  roster=load_roster(args.roster) if args.roster else None,
                                  borderline_seeds=args.borderline_seeds)
    counts = sorted(Counter(r.status.value for r in summary.results).items())
    print(render("summary.txt.j2", results=summary.results, skipped=summary.skipped, out=args.out,
                 cached=summary.cached, seconds=time.monotonic() - started, counts=counts).rstrip("\n"))
    return ExitCode.OK


def _ci(args: argparse.Namespace) -> ExitCode:
    from grader import ci

    submission = ci.find_submission(args.path, _rubric(args).files)
    context, slot, how = _own_code(args, not args.static)
    environment = ci.CiEnvironment.of(os.environ, Path.cwd())
    outcome = ci.grade(submission, context, environment, slot)
    ci.publish(outcome, environment, sys.stdout, how, args.junit)
    return ExitCode.OK if outcome.passed else ExitCode.FAILED


def _report(args: argparse.Namespace) -> ExitCode:
    from grader.exports import load_roster
    from grader.overrides import for_batch
    from grader.report import rerender

    if not (args.out / "results").is_dir():
        raise GraderError(f"{args.out}: no results/ folder; give the OUT of a `grader grade DIR --out OUT`")
    rubric = load_rubric(args.rubric)
    roster = load_roster(args.roster) if args.roster else None
    count = rerender(args.out, rubric, for_batch(args.out, args.overrides, rubric), roster)
    print(f"{count} results rendered again: {args.out / 'gradebook.csv'}, {args.out / 'index.html'}")
    return ExitCode.OK


def _gradescope(args: argparse.Namespace) -> ExitCode:
    from grader import gradescope

    if (args.zip is None) == (args.autograder is None):
        raise GraderError("give OUT.zip to build the autograder, or --autograder ROOT to grade inside Gradescope")
    if args.zip is not None:
        rubric = _rubric(args)
        with tempfile.TemporaryDirectory(prefix="grader-wheel-") as work:
            wheel = args.wheel or gradescope.checkout_wheel(Path(work))
            if not wheel.is_file():
                raise GraderError(f"--wheel {wheel}: no such file")
            gradescope.build_autograder(args.zip, rubric, wheel)
        print(f"Gradescope autograder written to {args.zip}; upload it as the assignment's autograder (README: Gradescope)")
        return ExitCode.OK
    unsandboxed = _sandbox_reason(args)  # a container per submission: unsandboxed is said in the output
    context = _context(args, run=True, sandboxed=unsandboxed is None)
    slot = _slots(args, context.rubric)[0]
    record = gradescope.grade_autograder(args.autograder, context, _how_it_ran(unsandboxed, slot), slot)
    print(record["output"])
    return ExitCode.OK


def _env(args: argparse.Namespace) -> ExitCode:
    from grader import environment
    from grader.archive import unpack
    from grader.report import render
    from grader.submission import discover

    rubric = load_rubric(args.rubric)
    with tempfile.TemporaryDirectory(prefix="grader-env-") as temp:
        root, unpacked = unpack(args.directory, Path(temp))
        needs = environment.scan(discover(root, rubric.files, *unpacked).submissions)
    missing = [n for n in needs if not n.installed]
    allowed = {p.lower() for p in rubric.allowed_packages}
    installable = [n.package for n in missing if n.package.lower() in allowed]
    print(render("env.txt.j2", needs=needs, missing=missing, allowed=allowed, install=args.install), end="")
    if args.install and installable:
        if environment.install(installable) != 0:
            raise GraderError(f"pip could not install {' '.join(installable)}; see its output above")
        return ExitCode.OK
    return ExitCode.FAILED if missing else ExitCode.OK


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
    handlers = {"check": _check, "grade": _grade, "ci": _ci, "gradescope": _gradescope, "report": _report,
                "env": _env, "data": _data}
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
