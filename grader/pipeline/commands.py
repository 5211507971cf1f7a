"""What each command of the CLI does, as library calls: the policy the command line only passes on
(time limits, when a run must be sandboxed, GPUs and slots, which executor, what may be installed).

Notices for the user (a run without a sandbox, cgroups missing, an oversubscribed machine) go to
``say``; the CLI prints them to stderr.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.model.errors import GraderError
from grader.model.results import Result, Status
from grader.model.rubric import Rubric, load_rubric
from grader.model.submission import Submitted

if TYPE_CHECKING:
    from grader.model.context import Context
    from grader.pipeline.package import Package
    from grader.run.slots import Slot

Say = Callable[[str], None]


@dataclass(frozen=True)
class Setup:
    """What the grading commands share: the rubric, the data, a time limit and the sandbox
    choice."""

    rubric: Path | None = None  # None: ./rubric.yaml, else the shipped one
    data: Path | None = None  # a folder with the four IDX files; None: the prepared cache
    timeout: float | None = None  # seconds for a whole notebook, over the rubric's
    no_sandbox: bool = False  # run unisolated (only for code the user trusts)


@dataclass(frozen=True)
class Placement:
    """Where a batch's runs go on this machine."""

    # at once; None: --per-gpu per GPU, else cores / the rubric's cpu_threads
    jobs: int | None = None
    gpus: str | None = None  # "0,1" (nvidia-smi indices or UUIDs), "none", or None: all visible
    per_gpu: int = 1


def rubric_of(setup: Setup) -> Rubric:
    """The rubric, with the command line's time limit over its own."""
    rubric = load_rubric(setup.rubric)
    if setup.timeout is None:
        return rubric
    if setup.timeout <= 0:
        raise GraderError("--timeout must be a positive number of seconds")
    limits = replace(
        rubric.limits,
        total_timeout_s=setup.timeout,
        cell_timeout_s=min(rubric.limits.cell_timeout_s, setup.timeout),
    )
    return replace(rubric, limits=limits)


def context_of(setup: Setup, run: bool, sandboxed: bool = False, grading: bool = False) -> Context:
    """What submissions are graded against; the dataset only when they will run. ``grading``: the
    grade is made here (`grader grade`, Gradescope), so test labels are hidden unless the rubric
    says otherwise (``Rubric.for_grading``)."""
    from grader.model.context import Context
    from grader.static.reference import derive_facts

    rubric = rubric_of(setup).for_grading() if grading else rubric_of(setup)
    if not run:
        return Context(rubric, derive_facts(rubric.template), None, sandboxed)
    from grader.intake.dataset import prepare

    dataset = prepare(setup.data, choice=rubric.dataset)
    if dataset.classes != rubric.dataset.class_names():  # the data's names (CIFAR's batches.meta)
        rubric = replace(rubric, dataset=replace(rubric.dataset, classes=dataset.classes))
        dataset = replace(dataset, choice=rubric.dataset)
    return Context(rubric, derive_facts(rubric.template), dataset, sandboxed)


def sandbox_reason(setup: Setup) -> str | None:
    """Why runs will not be sandboxed (None: they will be)."""
    from grader.run.sandbox import unavailable_reason

    return "--no-sandbox was given" if setup.no_sandbox else unavailable_reason()


def _limits_notice(sandboxed: bool, say: Say) -> None:
    """Say once when the sandbox cannot cap a run's processes together (no writable cgroup)."""
    if not sandboxed:
        return
    from grader.run.cgroups import find_hierarchy

    hierarchy, why = find_hierarchy()
    if hierarchy is None:
        say(
            f"note: {why}; memory is capped per process (RLIMIT_DATA), not for all of a notebook's "
            "processes together (run as root for cgroup limits)"
        )


def slots_of(placement: Placement, rubric: Rubric) -> tuple[Slot, ...]:
    """One slot per parallel job; unknown GPUs are a one-line error."""
    from grader.run.gpus import find as find_gpu
    from grader.run.slots import plan_slots, visible_gpus

    if placement.jobs is not None and placement.jobs < 1 or placement.per_gpu < 1:
        raise GraderError("--jobs and --per-gpu must be at least 1")
    gpus = (
        visible_gpus()
        if placement.gpus is None
        else ()
        if placement.gpus == "none"
        else tuple(g.strip() for g in placement.gpus.split(",") if g.strip())
    )
    unknown = [g for g in gpus if find_gpu(g) is None]
    if unknown:
        raise GraderError(
            f"GPU {', '.join(unknown)} is not on this machine; give nvidia-smi's "
            "indices (or UUIDs) like --gpus 0,1, or --gpus none"
        )
    return plan_slots(
        placement.jobs, len(os.sched_getaffinity(0)), gpus, placement.per_gpu, rubric.cpu_threads
    )


def how_it_ran(unsandboxed: str | None, slot: Slot | None) -> str:
    """The "ran:" line of one run."""
    where = "in the sandbox" if unsandboxed is None else f"without a sandbox ({unsandboxed})"
    if slot is not None and slot.gpu is not None:
        return (
            f"{where}, on GPU {slot.gpu} (the TA's run on other hardware can differ by a few "
            "tenths of a point)"
        )
    return f"{where}, on the CPU ({slot.threads if slot else 1} threads)"


@dataclass(frozen=True)
class OwnRun:
    """How one submission that is the user's own code is graded (check, ci): without a sandbox it
    still runs, and says so; the slot has the rubric's threads and a GPU if there is one."""

    context: Context
    slot: Slot | None
    how: str | None  # the "ran:" line; None when it does not run


def own_code(setup: Setup, run: bool, say: Say) -> OwnRun:
    unsandboxed = sandbox_reason(setup) if run else None
    if unsandboxed:
        say(f"running without a sandbox ({unsandboxed})")
    context = context_of(setup, run, sandboxed=run and unsandboxed is None)
    _limits_notice(context.sandboxed, say)
    slot = slots_of(Placement(jobs=1), context.rubric)[0] if run else None
    return OwnRun(context, slot, how_it_ran(unsandboxed, slot) if run else None)


@dataclass(frozen=True)
class Checked:
    """`grader check`: the result, what the package check found, and what to tell the student."""

    result: Result
    rubric: Rubric
    how: str | None
    notices: tuple[str, ...]
    package: Package | None

    @property
    def ok(self) -> bool:
        return self.result.status is Status.GRADED and not (
            self.package is not None and self.package.problems
        )


def check(paths: Sequence[Path], setup: Setup, run: bool, package: bool, say: Say) -> Checked:
    """A student's pre-check of one notebook (or, with ``package``, the three files to submit)."""
    from grader.intake.collect import collect_one
    from grader.pipeline.grade import grade_one

    own = own_code(setup, run, say)
    rubric = own.context.rubric
    found = None
    if package:
        from grader.pipeline.package import inspect

        found = inspect(paths, rubric.files)
    if found is not None and found.main is None:
        raise GraderError("no notebook or script to check: " + "; ".join(found.problems))
    if found is None and len(paths) != 1:
        raise GraderError(
            "give one notebook or script (or --package with the folder or the three files)"
        )
    path = found.main if found is not None and found.main else paths[0]
    named = rubric.files.account_of(path.name) is not None
    notices = (
        ()
        if named
        else (
            f"the file name should be {rubric.files.notebook} (or .py) when you submit"
            + (
                f": {path.name} is the handout's name, no student's"
                if rubric.files.is_handout(path.name)
                else ""
            ),
        )
    )
    result = grade_one(collect_one(path, rubric.files), own.context, own.slot)
    if found is not None and run:
        from grader.pipeline.package import against_measured

        found = against_measured(found, result.accuracy, rubric.accuracy.mismatch_tolerance)
    return Checked(result, rubric, own.how, notices, found)


def ci(path: Path, setup: Setup, static: bool, workspace: Path, say: Say) -> tuple[Any, str | None]:
    """`grader ci`: the submission in a repository, graded as `grader check` grades it; against the
    rubric's deadline it came in when its file was last committed. (outcome, the "ran:" line)"""
    from grader.intake.collect import collect_one
    from grader.outputs.ci import outcome
    from grader.pipeline.grade import grade_one
    from grader.run.children import commit_time

    sub = collect_one(path, rubric_of(setup).files) if path.is_dir() else None
    if sub is None:
        raise GraderError(f"{path}: no such directory; give the repository's folder (default: .)")
    own = own_code(setup, not static, say)
    sub = replace(sub, submitted=commit_time(sub.path) or sub.submitted)
    result = grade_one(sub, own.context, own.slot)
    return outcome(
        result, sub, own.context.rubric, workspace, ran=own.context.dataset is not None
    ), own.how


def _uploaded(root: Path) -> Submitted | None:
    """When Gradescope says the submission was made (its submission_metadata.json, not the
    student's)."""
    try:
        stamp = json.loads((root / "submission_metadata.json").read_text(encoding="utf-8"))[
            "created_at"
        ]
        when = datetime.fromisoformat(str(stamp))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return Submitted(when, "Gradescope upload time") if when.tzinfo else None


def autograder(root: Path, setup: Setup) -> dict[str, Any]:
    """Inside Gradescope (a container per submission): grade ROOT/submission; a run without a
    sandbox
    is said in the output."""
    unsandboxed = sandbox_reason(setup)
    context = context_of(setup, run=True, sandboxed=unsandboxed is None, grading=True)
    slot = slots_of(Placement(jobs=1), context.rubric)[0]
    return grade_autograder(root, context, how_it_ran(unsandboxed, slot), slot)


def grade_autograder(
    root: Path, context: Context, how: str, slot: Slot | None = None
) -> dict[str, Any]:
    """Grade ROOT/submission and write ROOT/results/results.json, whatever happens."""
    from grader.intake.collect import collect_one
    from grader.outputs.ci import outcome
    from grader.outputs.gradescope import results, unreadable
    from grader.outputs.text import check_text
    from grader.pipeline.grade import grade_one

    folder = root / "submission"
    try:
        sub = collect_one(folder, context.rubric.files)
        sub = replace(sub, submitted=_uploaded(root) or sub.submitted)
        result = grade_one(sub, context, slot)
        found = outcome(result, sub, context.rubric, folder, ran=context.dataset is not None)
        record = results(found, check_text(result, context.rubric, how if found.ran else None))
    except GraderError as exc:
        record = unreadable(str(exc))
    except Exception as exc:  # noqa: BLE001 - Gradescope must get a results.json, whatever happened
        record = unreadable(
            f"the grader could not grade this submission ({type(exc).__name__}); "
            "tell the course staff, who will grade it by hand"
        )
    results_dir = root / "results"
    if results_dir.is_symlink() or (results_dir.exists() and not results_dir.is_dir()):
        # not ours: Gradescope's folder, which nothing else should have replaced
        results_dir.unlink()
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "results.json").write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def autograder_zip(target: Path, setup: Setup, wheel: Path | None) -> Path:
    """Build the Gradescope autograder zip, with ``wheel`` or this checkout's wheel."""
    from grader.outputs.gradescope import build_autograder
    from grader.run.children import build_wheel

    rubric = rubric_of(setup)
    with tempfile.TemporaryDirectory(prefix="grader-wheel-") as work:
        wheel = wheel or build_wheel(Path(work))
        if not wheel.is_file():
            raise GraderError(f"--wheel {wheel}: no such file")
        return build_autograder(target, rubric, wheel)


def batch_context(setup: Setup, say: Say) -> Context:
    """A batch of other people's code runs sandboxed, unless the TA says --no-sandbox."""
    unsandboxed = sandbox_reason(setup)
    if unsandboxed and not setup.no_sandbox:
        raise GraderError(
            f"a batch of other people's code needs the sandbox, and {unsandboxed}; "
            "or pass --no-sandbox to run it unisolated"
        )
    context = context_of(setup, run=True, sandboxed=unsandboxed is None, grading=True)
    _limits_notice(context.sandboxed, say)
    return context


def executor_of(
    kind: str, address: str | None, placement: Placement, rubric: Rubric, say: Say
) -> AbstractContextManager[Any]:
    """The local executor over this machine's slots ("local"), or a connection to a Ray cluster
    ("ray")."""
    if kind == "ray":
        from grader.pipeline.executors.ray import RayPlan, ray_executor

        if placement.jobs is not None or placement.gpus not in (None, "none"):
            raise GraderError(
                "with --executor ray, Ray places the jobs: drop --jobs and --gpus "
                "(or say --gpus none)"
            )
        if placement.per_gpu < 1:
            raise GraderError("--per-gpu must be at least 1")
        return ray_executor(
            address,
            RayPlan(rubric.cpu_threads, placement.per_gpu, use_gpus=placement.gpus != "none"),
        )
    if address:
        raise GraderError("--address is for --executor ray")
    from grader.pipeline.executors.local import LocalExecutor

    slots = slots_of(placement, rubric)
    cores = len(os.sched_getaffinity(0))
    if not any(s.gpu for s in slots) and len(slots) * rubric.cpu_threads > cores:
        say(
            f"note: {len(slots)} jobs x {rubric.cpu_threads} threads on {cores} cores; runs will "
            "slow each other down"
        )
    return nullcontext(LocalExecutor(slots))


@dataclass(frozen=True)
class Needs:
    """`grader env`: the modules the class imports, which are missing, and which the rubric allows
    to install."""

    needs: tuple[Any, ...]
    missing: tuple[Any, ...]
    allowed: frozenset[str]
    installable: tuple[str, ...]


def needs(directory: Path, rubric: Rubric) -> Needs:
    from grader.intake.collect import collect
    from grader.static import environment

    with tempfile.TemporaryDirectory(prefix="grader-env-") as temp:
        found = environment.scan(collect(directory, rubric, Path(temp)).submissions)
    missing = tuple(n for n in found if not n.installed)
    allowed = frozenset(p.lower() for p in rubric.allowed_packages)
    return Needs(
        found, missing, allowed, tuple(n.package for n in missing if n.package.lower() in allowed)
    )


@dataclass(frozen=True)
class Drafted:
    """`grader rubric`: the draft written and what the template fixes, one line each."""

    path: Path
    lines: tuple[str, ...]


def rubric_draft(template: Path, out: Path | None, force: bool) -> Drafted:
    """Derive the frozen facts from ``template`` and write a rubric draft to ``out`` (default:
    rubric.draft.yaml beside it), copying the rest from the shipped rubric; an existing file only
    with ``force``."""
    from grader.model.resources import shipped
    from grader.outputs.rubric_draft import DRAFT_NAME, derived_lines, draft_text, homework_name
    from grader.static.reference import derive_facts

    target = out if out is not None else template.parent / DRAFT_NAME
    if target.exists() and not force:
        raise GraderError(f"{target} exists; pass --force to overwrite it")
    facts = derive_facts(template)
    homework = homework_name(template)
    relative = Path(os.path.relpath(template.resolve(), target.resolve().parent)).as_posix()
    text = draft_text(homework, relative, facts, shipped("rubric.yaml"))
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise GraderError(f"cannot write {target}: {exc.strerror}") from None
    return Drafted(target, derived_lines(homework, facts))


def install(packages: Sequence[str]) -> None:
    """pip install the packages into the grader's environment (the one kernels run in)."""
    from grader.run.children import pip_install

    if pip_install(list(packages)) != 0:
        raise GraderError(f"pip could not install {' '.join(packages)}; see its output above")
