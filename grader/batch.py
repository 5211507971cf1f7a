"""Grade a directory of submissions into OUT; one broken submission never costs another its result."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from grader.errors import SubmissionError
from grader.grade import Context, grade_submission
from grader.report import write_batch_reports
from grader.results import Result, Status
from grader.submission import discover


@dataclass(frozen=True)
class BatchSummary:
    results: tuple[Result, ...]
    skipped: tuple[tuple[str, str], ...]  # (file name, why it was not graded)


def failed_result(account: str, source: Path, reason: str, max_score: int) -> Result:
    """A result for a submission that could not be graded at all."""
    return Result(student=account, source=source.name, status=Status.ERROR, accuracy=None, reported_accuracy=None,
                  score=0, max_score=max_score, bonus=0, checks=(), flags=(), duration_s=0.0, reason=reason)


def grade_directory(directory: Path, out: Path, context: Context,
                    on_result: Callable[[Result], None] = lambda r: None) -> BatchSummary:
    """Grade every submission under ``directory``; write each result as soon as it is known."""
    rubric = context.rubric
    found = discover(directory, rubric.files)
    if not found.submissions and not found.unreadable:
        raise SubmissionError(
            f"{directory}: no submissions found; expected files named like {rubric.files.notebook.format(account='ACCOUNT')}"
        )
    skipped = tuple((str(p.relative_to(directory)), f"name matches no pattern ({rubric.files.notebook})")
                    for p in found.unmatched)
    max_score = rubric.accuracy.max_points
    results = []
    for account, path, why in found.unreadable:
        result = failed_result(account, path, why, max_score)
        result.write(out / "results" / f"{account}.json")
        results.append(result)
        on_result(result)
    for sub in found.submissions:
        with tempfile.TemporaryDirectory(prefix=f"grader-{sub.account}-") as work:
            try:
                result = grade_submission(sub, context, Path(work), out / "executed" / f"{sub.account}.ipynb")
            except Exception as exc:  # noqa: BLE001 - the batch goes on; the reason is kept
                result = failed_result(sub.account, sub.path, f"internal grader error: {type(exc).__name__}: {exc}", max_score)
        result.write(out / "results" / f"{sub.account}.json")
        results.append(result)
        on_result(result)
    write_batch_reports(out, results, rubric, list(skipped))
    return BatchSummary(tuple(results), skipped)
