"""What the class page shows above the table: the bands, who is borderline, what to review first."""

from __future__ import annotations

from dataclasses import dataclass

from markupsafe import Markup

from grader.overrides import Grade
from grader.results import Status
from grader.rubric import Rubric
from grader.score import near_threshold


@dataclass(frozen=True)
class Band:
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
    bands: tuple[Band, ...]
    borderline: tuple[Borderline, ...]
    review: tuple[Grade, ...]  # violations, failed runs and flagged results, first to look at


def bands(rows: list[Grade], rubric: Rubric) -> tuple[Band, ...]:
    """How many measured results fall in each band of the scale (and how many have no accuracy)."""
    levels = [t.at_least for t in rubric.accuracy.thresholds]
    measured = [g.result.accuracy for g in rows if g.result.accuracy is not None]
    found = [Band(f"below {levels[0]:g}%", sum(a < levels[0] for a in measured))]
    for t, upper in zip(rubric.accuracy.thresholds, [*levels[1:], None]):
        inside = [a for a in measured if a >= t.at_least and (upper is None or a < upper)]
        found.append(Band(f"{t.at_least:g}%{f' to {upper:g}%' if upper else ' and above'}: {t.points} points", len(inside)))
    return (*found, Band("not measured", len(rows) - len(measured)))


def borderline(rows: list[Grade], rubric: Rubric) -> tuple[Borderline, ...]:
    """Results within the rubric's margin of a threshold (the bonus's included), closest first."""
    close = []
    for g in rows:
        a = g.result.accuracy
        near = None if a is None else near_threshold(rubric, a)
        if a is not None and near is not None:
            close.append(Borderline(g, near, round(a - near, 2)))
    return tuple(sorted(close, key=lambda b: abs(b.gap)))


def summarize(rows: list[Grade], rubric: Rubric) -> ClassSummary:
    from grader.plots import accuracy_histogram

    measured = [g.result.accuracy for g in rows if g.result.accuracy is not None]
    review = tuple(g for g in rows if g.result.status is not Status.GRADED or g.result.flags)
    return ClassSummary(accuracy_histogram(measured, rubric) if measured else None, bands(rows, rubric),
                        borderline(rows, rubric), review)
