"""What the class page shows above the table: the bands, who is borderline, what to review first."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from markupsafe import Markup

from grader.model.results import Status
from grader.model.rubric import Rubric
from grader.scoring.overrides import Grade
from grader.scoring.score import band, near_threshold, percent


@dataclass(frozen=True)
class Count:
    """How many results stand in one band of the scale."""

    label: str  # "89% and above: 60 points"
    count: int


@dataclass(frozen=True)
class Borderline:
    grade: Grade
    threshold: float  # the threshold it is close to
    gap: float  # accuracy - threshold (negative: just below)


@dataclass(frozen=True)
class ClassSummary:
    histogram: Markup | None  # inline SVG; None when nothing was measured
    bands: tuple[Count, ...]
    borderline: tuple[Borderline, ...]
    review: tuple[Grade, ...]  # violations, failed runs and flagged results, first to look at
    decided: int = 0  # of ``review``, those the TA decided by setting their points (overrides.yaml)
    statuses: tuple[Count, ...] = ()  # how many results have each status, in the order of Status
    mean: float | None = None  # of the graded results' measured accuracies
    median: float | None = None


def bands(rows: list[Grade], rubric: Rubric) -> tuple[Count, ...]:
    """How many graded results stand in each band of the scale; violations, failed runs and results
    to review have counts of their own (their accuracy does not give them a band's points)."""
    thresholds = rubric.accuracy.thresholds
    graded = [g for g in rows if g.result.status is Status.GRADED]
    reached = [
        band(rubric, a).reached
        for g in graded
        if (a := percent(g.result.correct, g.result.total, g.result.accuracy)) is not None
    ]
    found = [Count(f"below {thresholds[0].at_least:g}%", sum(r is None for r in reached))]
    for t, upper in zip(thresholds, [*(u.at_least for u in thresholds[1:]), None]):
        found.append(
            Count(
                f"{t.at_least:g}%{f' to {upper:g}%' if upper else ' and above'}: {t.points} points",
                sum(r == t.at_least for r in reached),
            )
        )
    found.append(Count("graded, not measured", len(graded) - len(reached)))
    for statuses, label in (
        ((Status.VIOLATION,), "violations"),
        ((Status.REVIEW,), "to review"),
        ((Status.ERROR, Status.TIMEOUT), "failed runs (error, time limit)"),
    ):
        found.append(Count(label, sum(g.result.status in statuses for g in rows)))
    return tuple(found)


def borderline(rows: list[Grade], rubric: Rubric) -> tuple[Borderline, ...]:
    """Results within the rubric's margin of a threshold (the bonus's included), closest first."""
    close = []
    for g in rows:
        a = g.result.accuracy
        near = None if a is None else near_threshold(rubric, a)
        if a is not None and near is not None:
            close.append(Borderline(g, near, round(a - near, 2)))
    return tuple(sorted(close, key=lambda b: abs(b.gap)))


def measured(rows: list[Grade]) -> list[float]:
    """The accuracies the histogram shows: graded results' only."""
    return [
        g.result.accuracy
        for g in rows
        if g.result.accuracy is not None and g.result.status is Status.GRADED
    ]


def summarize(rows: list[Grade], rubric: Rubric, histogram: Markup | None) -> ClassSummary:
    """The summary above the class table; ``histogram``: the drawn plot of ``measured(rows)``."""
    flagged = [g for g in rows if g.result.status is not Status.GRADED or g.result.flags]
    # Results to review with no override first, those whose points the TA set last.
    review = tuple(sorted(flagged, key=lambda g: (g.settled, g.overridden)))
    statuses = tuple(
        Count(status.value, n)
        for status in Status
        if (n := sum(g.result.status is status for g in rows))
    )
    accuracies = measured(rows)
    # fmean raises on an overflowing sum
    mean = sum(accuracies) / len(accuracies) if accuracies else None
    median = statistics.median(accuracies) if accuracies else None
    return ClassSummary(
        histogram,
        bands(rows, rubric),
        borderline(rows, rubric),
        review,
        sum(g.overridden for g in review),
        statuses,
        mean,
        median,
    )
