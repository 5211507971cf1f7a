"""Grade one submission: the pipeline Submission -> StaticReport -> ExecutionRecord -> Measurement -> Score -> Result."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from grader.data import Dataset
from grader.reference import FrozenFacts
from grader.results import ExecutionRecord, Measurement, Result, StaticReport
from grader.rubric import Rubric
from grader.rules.static import check_static
from grader.score import score
from grader.submission import Submission


@dataclass(frozen=True)
class Context:
    """What every submission of a batch is graded against."""

    rubric: Rubric
    facts: FrozenFacts
    dataset: Dataset | None  # None: static checks only


def run_submission(sub: Submission, context: Context, workdir: Path) -> tuple[ExecutionRecord, Measurement]:
    """Execute in a kernel, then measure in this process."""
    # Imported here so the static path (`grader check FILE`) never loads nbclient or the kernel machinery.
    from grader.execute import RunPlan, execute
    from grader.measure import measure

    assert context.dataset is not None
    rubric = context.rubric
    plan = RunPlan(workdir=workdir, dataset=context.dataset, seed=rubric.seed,
                   cell_timeout_s=rubric.limits.cell_timeout_s, total_timeout_s=rubric.limits.total_timeout_s)
    record = execute(sub, plan)
    return record, measure(record, context.dataset.test_labels(), rubric.accuracy.mismatch_tolerance)


def assemble(sub: Submission, static: StaticReport, record: ExecutionRecord | None,
             measurement: Measurement | None, context: Context) -> Result:
    """Score and wrap everything into the result record."""
    verdict = score(context.rubric, static, record, measurement)
    return Result(
        student=sub.account,
        source=sub.path.name,
        status=verdict.status,
        accuracy=measurement.accuracy if measurement else None,
        reported_accuracy=measurement.reported_accuracy if measurement else None,
        score=verdict.score,
        max_score=verdict.max_score,
        bonus=verdict.bonus,
        checks=static.checks,
        flags=measurement.flags if measurement else (),
        duration_s=record.duration_s if record else 0.0,
        reason=verdict.reason,
        measured_by=measurement.source if measurement else None,
        notes=measurement.notes if measurement else (),
        report_pdf=sub.report.name if sub.report else None,
    )


def grade_submission(sub: Submission, context: Context, workdir: Path, keep_executed: Path | None = None) -> Result:
    """Check, run (when the context has a dataset), measure and score one submission."""
    static = check_static(sub, context.facts, context.rubric)
    if context.dataset is None:
        return assemble(sub, static, None, None, context)
    record, measurement = run_submission(sub, context, workdir)
    if keep_executed is not None and record.executed_notebook is not None:
        keep_executed.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(record.executed_notebook, keep_executed)
    return assemble(sub, static, record, measurement, context)
