"""Grade one submission: the pipeline Submission -> StaticReport -> ExecutionRecord -> Measurement -> Score -> Result."""

from __future__ import annotations

import base64
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from grader.data import Dataset, kernel_view, label_copies
from grader.deadline import apply as apply_late, days_late, describe
from grader.environment import installed_version
from grader.errors import GraderError
from grader.gpus import Gpu, find as find_gpu
from grader.reference import FrozenFacts
from grader.results import Check, ExecutionRecord, Measurement, Result, StaticReport, Status
from grader.rubric import Rubric
from grader.rules import Finding, check_static, disagreements
from grader.run_facts import training_curve
from grader.slots import Slot
from grader.score import score
from grader.submission import Submission, twin_difference
from grader.tamper import runtime_evidence


@dataclass(frozen=True)
class Context:
    """What every submission of a batch is graded against, and how it runs."""

    rubric: Rubric
    facts: FrozenFacts
    dataset: Dataset | None  # None: static checks only
    sandboxed: bool = False  # run each kernel inside bubblewrap


@dataclass(frozen=True)
class Run:
    """What running a submission gave: the record, the measurement and the run-time rule verdicts."""

    record: ExecutionRecord
    measurement: Measurement
    checks: tuple[Check, ...]
    findings: tuple[Finding, ...] = ()  # flags the rules raise without a verdict, with their notes
    curve: dict[str, Any] | None = None  # the graded model's training curve, where the probe saw one


def _gpu(slot: Slot | None) -> Gpu | None:
    """The physical GPU of the slot; a slot naming a GPU this machine does not have is a setup error."""
    if slot is None or slot.gpu is None:
        return None
    gpu = find_gpu(slot.gpu)
    if gpu is None:
        raise GraderError(f"GPU {slot.gpu} is not on this machine (no such entry under /proc/driver/nvidia/gpus)")
    return gpu


def run_submission(sub: Submission, context: Context, rundir: Path, slot: Slot | None = None,
                   seed: int | None = None) -> Run:
    """Execute in a kernel, then measure and judge the rules in this process; ``seed`` replaces the
    rubric's (a borderline result's re-run, grader.seeds)."""
    # Imported here so the static path (`grader check FILE`) never loads nbclient or the kernel machinery.
    from grader.cgroups import find_hierarchy
    from grader.execute import RunPlan, execute
    from grader.measure import measure
    from grader.rules import check_runtime, findings, run_view
    from grader.sandbox import SANDBOX_UID, Sandbox, SandboxLimits, python_paths, visible_roots

    assert context.dataset is not None
    rubric, limits = context.rubric, context.rubric.limits
    view = kernel_view(context.dataset, rundir / "data", rubric.hide_test_labels)
    sandbox = None
    if context.sandboxed:
        readonly = python_paths() + view.dataset.files
        masked = label_copies(context.dataset, visible_roots(readonly)) if rubric.hide_test_labels else ()
        sandbox = Sandbox(kernel_dir=rundir / "kernel", readonly=readonly,
                          limits=SandboxLimits(limits.memory_mb, limits.max_processes, limits.max_file_mb,
                                               limits.scratch_mb),
                          gpu=_gpu(slot), uid=SANDBOX_UID - (slot.index if slot else 0),
                          cores=slot.cores if slot else (), masked=masked)
    plan = RunPlan(rundir=rundir, dataset=view.dataset, seed=rubric.seed if seed is None else seed,
                   cell_timeout_s=limits.cell_timeout_s, total_timeout_s=limits.total_timeout_s, sandbox=sandbox,
                   max_output_bytes=limits.max_output_mb * 1024 * 1024, slot=slot,
                   cgroups=find_hierarchy()[0] if sandbox is not None else None,
                   gpu_memory_mb=limits.per_gpu_memory_mb if slot and slot.gpu else 0)
    record = execute(sub, plan)
    facts = run_view(record.probe, record.status is Status.GRADED) if record.probe is not None else None
    labels = view.labels(context.dataset.test_labels())
    measurement = measure(record, record.probe, labels, rubric.accuracy.mismatch_tolerance,
                          compare_reported=not rubric.hide_test_labels, training=facts.training if facts else None)
    if view.order is not None:  # the kernel's k-th test image is the official order[k]: thumbnails come from there
        order = view.order
        measurement = replace(measurement, wrong=tuple((order[i], y, p, c) for i, y, p, c in measurement.wrong))
    curve = (training_curve(record.probe, facts.training, context.dataset.train_labels(), labels)
             if facts is not None and record.probe is not None else None)
    return Run(record, measurement, check_runtime(facts, context.facts, rubric), findings(facts, context.facts, rubric),
               curve)


def _at_error(run: Run) -> tuple[float | None, str | None, tuple[str, ...]]:
    """(accuracy, measured by, notes): after a failed run the model is measured as it was at the error,
    which is not the notebook's result, so it is shown as a note and never as the accuracy."""
    measurement = run.measurement
    if run.record.status is Status.GRADED or measurement.accuracy is None:
        return measurement.accuracy, measurement.source, ()
    return None, "model-at-error", (f"the run did not finish; the model as it was at that point scores "
                                    f"{measurement.accuracy:.2f}% on the test set (not the notebook's result)",)


def _lateness(sub: Submission, rubric: Rubric) -> tuple[int | None, tuple[str, ...]]:
    """Started days late (None without a deadline or a submission time) and the note saying so."""
    if rubric.deadline is None or sub.submitted is None:
        return None, ()
    days = days_late(sub.submitted.at, rubric.deadline)
    return days, ((describe(sub.submitted, rubric.deadline, days),) if days else ())


@dataclass(frozen=True)
class Stated:
    """The accuracies the student states outside the grader's run, with what the TA should know."""

    saved: float | None  # printed in the outputs saved in the submitted notebook (their own run)
    report: float | None  # "Best accuracy: xx%" on the report PDF's first page
    flags: tuple[str, ...]
    notes: tuple[str, ...]


def _stated(sub: Submission, measured: float | None, tolerance: float) -> Stated:
    """What the submitted notebook's saved outputs and the report say the accuracy was; a flag when
    the report's figure is further than the rubric's tolerance from the measured accuracy."""
    from grader.measure import reported_accuracy
    from grader.report_pdf import headline

    saved = reported_accuracy(sub.saved_output) if sub.saved_output else None
    if sub.report is None:
        return Stated(saved, None, (), ())
    found = headline(sub.report)
    if found.accuracy is None:
        return Stated(saved, None, (), (f"report: {found.problem}",) if found.problem else ())
    if measured is not None and abs(found.accuracy - measured) > tolerance:
        return Stated(saved, found.accuracy, ("report-accuracy-differs",),
                      (f"the report states {found.accuracy:g}% but the grader measured {measured:.2f}%",))
    return Stated(saved, found.accuracy, (), ())


def assemble(sub: Submission, static: StaticReport, run: Run | None, context: Context) -> Result:
    """Score and wrap everything into the result record."""
    checks = static.checks + (run.checks if run else ())
    measurement = run.measurement if run else None
    tampering = static.tampering + (runtime_evidence(run.record.probe) if run else ())
    verdict = score(context.rubric, checks, run.record if run else None, measurement, tampering)
    late_days, late_note = _lateness(sub, context.rubric)
    verdict = apply_late(verdict, late_days or 0, context.rubric.late)
    differ = disagreements(checks)
    accuracy, measured_by, at_error = _at_error(run) if run else (None, None, ())
    twin = twin_difference(sub)
    wrong = measurement.wrong if measurement and accuracy is not None else ()
    stated = _stated(sub, accuracy, context.rubric.accuracy.mismatch_tolerance)
    found = sub.notes + ((twin,) if twin else ())
    found_flags = (("other-copies",) if sub.notes else ()) + (("script-differs",) if twin else ()) + sub.flags
    return Result(
        student=sub.account,
        source=sub.path.name,
        status=verdict.status,
        accuracy=accuracy,
        reported_accuracy=measurement.reported_accuracy if measurement else None,
        score=verdict.score,
        max_score=verdict.max_score,
        bonus=verdict.bonus,
        checks=checks,
        flags=(run.record.flags + run.measurement.flags + tuple(f for f, _ in run.findings) if run else ())
        + (("static-run-disagree",) if differ else ())
        + found_flags + (("probe-tampered",) if tampering else ()) + (("probe-reachable",) if static.reachable else ())
        + (("late",) if late_days else ()) + stated.flags,
        duration_s=run.record.duration_s if run else 0.0,
        reason=verdict.reason,
        measured_by=measured_by,
        notes=(run.record.notes + tuple(n for _, n in run.findings) if run else ()) + at_error
        + (measurement.notes if measurement else ()) + differ + found
        + tampering + static.reachable + late_note + ((sub.received,) if sub.received else ()) + stated.notes,
        report_pdf=sub.report.name if sub.report else None,
        submitted_at=sub.submitted.at.isoformat(timespec="seconds") if sub.submitted else None,
        late_days=late_days,
        confusion=measurement.confusion if measurement and accuracy is not None else None,
        curve=run.curve if run else None,
        wrong=wrong,
        saved_accuracy=stated.saved,
        report_accuracy=stated.report,
        wrong_images=(base64.b64encode(context.dataset.test_images([w[0] for w in wrong])).decode()
                      if wrong and context.dataset is not None else None),
        peak_memory_mb=run.record.peak_memory_mb if run else None,
        correct=measurement.correct if measurement and accuracy is not None else None,
        total=measurement.total if measurement and accuracy is not None else None,
    )


def grade_submission(sub: Submission, context: Context, rundir: Path, keep_executed: Path | None = None,
                     slot: Slot | None = None, seed: int | None = None) -> Result:
    """Check, run (when the context has a dataset), measure and score one submission.
    ``slot`` gives the run its share of the machine in a parallel batch; ``seed`` replaces the rubric's."""
    static = check_static(sub, context.facts, context.rubric)
    if context.dataset is None:
        return assemble(sub, static, None, context)
    run = run_submission(sub, context, rundir, slot, seed)
    if keep_executed is not None and run.record.executed_notebook is not None:
        keep_executed.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.record.executed_notebook, keep_executed)
    return replace(assemble(sub, static, run, context), environment=_environment(context, slot, seed))


def _environment(context: Context, slot: Slot | None, seed: int | None = None) -> str:
    """One line: the stack and the share of the machine the notebook ran with."""
    versions = ", ".join(f"{p} {installed_version(p)}" for p in ("torch", "torchvision"))
    device = f"GPU {slot.gpu}" if slot and slot.gpu else f"CPU, {slot.threads if slot else context.rubric.cpu_threads} threads"
    seed = context.rubric.seed if seed is None else seed
    return f"{versions}; {device}; seed {seed}; {'sandboxed' if context.sandboxed else 'not sandboxed'}"

