"""Grade one submission: Submission -> StaticReport -> ExecutionRecord -> Measurement -> Score ->
Result.

``grade_one`` is the one way to grade a submission: `grader check`, `grader ci`, Gradescope,
``grader.precheck()`` and both executors call it. It gathers what the submission brings (the
static report, the run, the .py twin, the report PDF's headline) and ``assemble`` turns that into
the result without any I/O of its own.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grader.evaluator.key import FASHION_MNIST
from grader.intake.read import read_submission
from grader.judge.stated import ReportHeadline, headline, reported_accuracy
from grader.model.context import Context
from grader.model.errors import SubmissionError
from grader.model.findings import Finding, Flag, flags_of, noted, notes_of
from grader.model.resources import installed_version
from grader.model.results import Check, ExecutionRecord, Measurement, Result, StaticReport, Status
from grader.model.submission import Submission
from grader.scoring.late import days_late, describe
from grader.scoring.score import disagreements, score
from grader.static.rules import check_static
from grader.static.similarity import twin_difference

if TYPE_CHECKING:
    from grader.judge.recompute import Recomputed
    from grader.judge.run_facts import Training
    from grader.run.slots import Slot


@dataclass(frozen=True)
class Run:
    """What running a submission gave: the record, the measurement and the run-time rule
    verdicts."""

    record: ExecutionRecord
    measurement: Measurement
    checks: tuple[Check, ...]
    findings: tuple[Finding, ...] = ()  # what the rules raise without a verdict
    # the graded model's training curve, where the probe saw one
    curve: dict[str, Any] | None = None


@dataclass(frozen=True)
class Brought:
    """What the student's other files say, read before assembling (a Ray node reads its own
    copies)."""

    twin: str | None  # the note when the .py twin differs from the graded notebook
    report: ReportHeadline | None  # the report PDF's headline; None without a report
    wrong_images: bytes | None  # the official pixels of the surest mistakes
    wrong_shape: tuple[int, int, int] = FASHION_MNIST.shape  # theirs: channels, height, width


def run_submission(
    sub: Submission,
    context: Context,
    rundir: Path,
    slot: Slot | None = None,
    seed: int | None = None,
) -> Run:
    """Execute in a kernel (run/), then measure and judge the rules here, in the grader's
    process."""
    from grader.judge import recompute
    from grader.judge.measure import measure
    from grader.judge.run_facts import training_curve
    from grader.judge.tamper import probe_faults
    from grader.run.launch import launch, start_evaluator
    from grader.static.rules import check_runtime, findings, run_view

    assert context.dataset is not None
    rubric = context.rubric
    evaluator = start_evaluator(context, rundir, slot)  # imports torch while the notebook runs
    try:
        launched = launch(sub, context, rundir, slot, seed)
        record, view = launched.record, launched.view
        official, train_labels = context.dataset.test_labels(), context.dataset.train_labels()
        classes = context.dataset.spec.classes
        recomputed = None
        if record.capture is not None:  # the graded pass, run again outside the notebook's process
            evaluated = evaluator.finish(record.capture)
            recomputed = recompute.read(
                evaluated.output, evaluated.problem, len(official), classes, len(train_labels)
            )
        elif (failed := recompute.capture_failed(record.probe)) is not None:
            recomputed = recompute.Recomputed(failed)
    finally:
        evaluator.close()
    facts = (
        run_view(record.probe, record.status is Status.GRADED, recomputed)
        if record.probe is not None
        else None
    )
    labels = view.labels(official)
    measurement = measure(
        record,
        record.probe,
        labels,
        rubric.accuracy.mismatch_tolerance,
        compare_reported=not rubric.hide_test_labels,
        classes=classes,
        training=facts.training if facts else None,
    )
    if record.status is Status.GRADED:
        measurement = recompute.apply(
            measurement,
            recomputed,
            official,
            rubric.accuracy.mismatch_tolerance,
            not rubric.hide_test_labels,
            classes,
        )
        faulted = probe_faults(record.probe)
        if faulted is not None and measurement.review is None:
            measurement = replace(measurement, review=faulted)
        measurement = _fitted(
            measurement, recomputed, context, train_labels, facts.training if facts else None
        )
    # the kernel's k-th test image is the official order[k]: thumbnails come from there
    if view.order is not None:
        order = view.order
        measurement = replace(
            measurement, wrong=tuple((order[i], y, p, c) for i, y, p, c in measurement.wrong)
        )
    curve = (
        training_curve(record.probe, facts.training, train_labels, labels)
        if facts is not None and record.probe is not None
        else None
    )
    return Run(
        record,
        measurement,
        check_runtime(facts, context.facts, rubric),
        findings(facts, context.facts, rubric),
        curve,
    )


def _fitted(
    measurement: Measurement,
    recomputed: Recomputed | None,
    context: Context,
    train_labels: tuple[int, ...],
    training: Training | None,
) -> Measurement:
    """The measurement with the graded model's fit of the training images (judge/fit.py), and the
    review it calls for when the test images are fitted better (or beyond the rubric's ceiling)."""
    from grader.judge import fit

    if not measurement.recomputed or measurement.accuracy is None or measurement.total is None:
        return measurement
    assert context.dataset is not None and recomputed is not None
    found = (
        fit.fit(
            recomputed.train_indices,
            recomputed.train_classes,
            train_labels,
            training.trained if training is not None else 0,
        )
        if recomputed.train_indices
        else None
    )
    ceiling = context.rubric.accuracy.ceiling if context.dataset.official else None
    why = fit.review(measurement.accuracy, measurement.total, found, ceiling)
    return replace(measurement, fit=found, review=measurement.review or why)


def report_headline(pdf: Path) -> ReportHeadline:
    """The report's first page read in a limited child process (run/children.py), then its
    headline."""
    from grader.run.children import pdf_first_page

    try:
        return headline(pdf, pdf_first_page(pdf))
    except ValueError as exc:
        return ReportHeadline(None, False, str(exc))


def twin_note(sub: Submission) -> str | None:
    """A note when the .py kept beside the graded .ipynb has other code than the notebook (or cannot
    be read)."""
    if sub.script is None:
        return None
    try:
        twin = read_submission(sub.script, sub.account)
    except SubmissionError as exc:
        return f"{sub.script.name} kept beside the notebook could not be compared: {exc}"
    return twin_difference(sub, twin)


def _brought(sub: Submission, run: Run | None, context: Context) -> Brought:
    wrong = run.measurement.wrong if run is not None and _graded_accuracy(run) is not None else ()
    dataset = context.dataset if wrong else None
    return Brought(
        twin_note(sub),
        report_headline(sub.report) if sub.report is not None else None,
        dataset.test_images([w[0] for w in wrong]) if dataset is not None else None,
        dataset.spec.shape if dataset is not None else FASHION_MNIST.shape,
    )


def _runtime_evidence(run: Run) -> tuple[str, ...]:
    from grader.judge.tamper import runtime_evidence

    return runtime_evidence(run.record.probe)


def _graded_accuracy(run: Run) -> float | None:
    """A failed run's model is measured as it was at the error, which is not the notebook's
    result."""
    return run.measurement.accuracy if run.record.status is Status.GRADED else None


def _at_error(run: Run) -> tuple[Finding, ...]:
    """After a failed run, the accuracy of the model at the error, as a note and never as the
    accuracy."""
    accuracy = run.measurement.accuracy
    if run.record.status is Status.GRADED or accuracy is None:
        return ()
    return noted(
        (
            "the run did not finish; the model as it was at that point scores "
            f"{accuracy:.2f}% on the test set (not the notebook's result)",
        )
    )


def _lateness(sub: Submission, context: Context) -> tuple[int | None, tuple[Finding, ...]]:
    """Started days late (None without a deadline or a submission time) and the finding saying
    so."""
    rubric = context.rubric
    if rubric.deadline is None or sub.submitted is None:
        return None, ()
    days = days_late(sub.submitted.at, rubric.deadline)
    return days, (
        (Finding(Flag.LATE, describe(sub.submitted, rubric.deadline, days)),) if days else ()
    )


def _stated(
    sub: Submission, report: ReportHeadline | None, measured: float | None, tolerance: float
) -> tuple[float | None, float | None, tuple[Finding, ...]]:
    """(saved, report, findings): the accuracies the student states outside the grader's run (the
    outputs saved in the submitted notebook, the report's "Best accuracy"), and a flag when the
    report's figure is further than the rubric's tolerance from the measured accuracy."""
    saved = reported_accuracy(sub.saved_output) if sub.saved_output else None
    if report is None:
        return saved, None, ()
    if report.accuracy is None:
        return saved, None, noted((f"report: {report.problem}",) if report.problem else ())
    if measured is not None and abs(report.accuracy - measured) > tolerance:
        return (
            saved,
            report.accuracy,
            (
                Finding(
                    Flag.REPORT_ACCURACY_DIFFERS,
                    "the report states "
                    f"{report.accuracy:g}% but the grader measured {measured:.2f}%",
                ),
            ),
        )
    return saved, report.accuracy, ()


def assemble(
    sub: Submission, static: StaticReport, run: Run | None, brought: Brought, context: Context
) -> Result:
    """Score and wrap everything into the result record; reads nothing."""
    rubric = context.rubric
    checks = static.checks + (run.checks if run else ())
    measurement = run.measurement if run else None
    tampering = static.tampering + (
        _runtime_evidence(run) + run.measurement.tampering if run else ()
    )
    late_days, late = _lateness(sub, context)
    verdict = score(
        rubric,
        checks,
        run.record if run else None,
        measurement,
        tampering,
        late_days or 0,
        static.literal_data,
    )
    differ = disagreements(checks)
    accuracy = _graded_accuracy(run) if run else None
    graded = measurement if measurement is not None and accuracy is not None else None
    saved, report, stated = _stated(
        sub, brought.report, accuracy, rubric.accuracy.mismatch_tolerance
    )
    findings = (
        (
            run.record.findings + run.findings + _at_error(run) + run.measurement.findings
            if run
            else ()
        )
        + ((Finding(Flag.STATIC_RUN_DISAGREE),) if differ else ())
        + noted(differ)
        + sub.findings
        + ((Finding(Flag.SCRIPT_DIFFERS, brought.twin),) if brought.twin else ())
        + tuple(Finding(Flag.PROBE_TAMPERED, t) for t in tampering)
        + tuple(Finding(Flag.PROBE_REACHABLE, s) for s in static.reachable)
        + ((Finding(Flag.LITERAL_DATA, static.literal_data),) if static.literal_data else ())
        + late
        + noted((sub.received,) if sub.received else ())
        + stated
    )
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
        flags=flags_of(findings),
        duration_s=run.record.duration_s if run else 0.0,
        reason=verdict.reason,
        measured_by=(measurement.source if accuracy is not None else "model-at-error")
        if measurement is not None and measurement.accuracy is not None
        else None,
        notes=notes_of(findings),
        report_pdf=sub.report.name if sub.report else None,
        submitted_at=sub.submitted.at.isoformat(timespec="seconds") if sub.submitted else None,
        late_days=late_days,
        confusion=graded.confusion if graded else None,
        curve=run.curve if run else None,
        wrong=graded.wrong if graded else (),
        saved_accuracy=saved,
        report_accuracy=report,
        wrong_images=base64.b64encode(brought.wrong_images).decode()
        if brought.wrong_images
        else None,
        wrong_shape=brought.wrong_shape,
        peak_memory_mb=run.record.peak_memory_mb if run else None,
        correct=graded.correct if graded else None,
        total=graded.total if graded else None,
        recomputed=graded.recomputed if graded else False,
        fit=graded.fit if graded else None,
        pending_score=verdict.pending[0] if verdict.pending else None,
        pending_bonus=verdict.pending[1] if verdict.pending else None,
    )


def grade_one(
    sub: Submission,
    context: Context,
    slot: Slot | None = None,
    seed: int | None = None,
    keep_executed: Path | None = None,
) -> Result:
    """Check, run (when the context has a dataset), measure and score one submission, in a private
    temporary folder. ``slot`` gives the run its share of the machine in a parallel batch; ``seed``
    replaces the rubric's; ``keep_executed`` receives the executed notebook."""
    with tempfile.TemporaryDirectory(prefix="grader-") as work:
        return grade_in(Path(work), sub, context, slot, seed, keep_executed)


def grade_in(
    folder: Path,
    sub: Submission,
    context: Context,
    slot: Slot | None = None,
    seed: int | None = None,
    keep_executed: Path | None = None,
) -> Result:
    """``grade_one`` with the run in ``folder``/run, left there (tests look at what a run left)."""
    static = check_static(sub, context.facts, context.rubric)
    if context.dataset is None:
        return assemble(sub, static, None, _brought(sub, None, context), context)
    run = run_submission(sub, context, folder / "run", slot, seed)
    if keep_executed is not None and run.record.executed_notebook is not None:
        keep_executed.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.record.executed_notebook, keep_executed)
    result = assemble(sub, static, run, _brought(sub, run, context), context)
    return replace(result, environment=_environment(context, slot, seed))


def _environment(context: Context, slot: Slot | None, seed: int | None = None) -> str:
    """One line: the stack and the share of the machine the notebook ran with."""
    versions = ", ".join(f"{p} {installed_version(p)}" for p in ("torch", "torchvision"))
    device = (
        f"GPU {slot.gpu}"
        if slot and slot.gpu
        else (f"CPU, {slot.threads if slot else context.rubric.cpu_threads} threads")
    )
    seed = context.rubric.seed if seed is None else seed
    return (
        f"{versions}; {device}; seed {seed}; "
        f"{'sandboxed' if context.sandboxed else 'not sandboxed'}"
    )
