"""Rubric + rule verdicts + run + measurement -> Score. Pure policy, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from grader.results import Check, ExecutionRecord, Measurement, Score, Status
from grader.rubric import Rubric
from grader.rules import effective


def accuracy_points(rubric: Rubric, correct: int, total: int) -> tuple[int, int]:
    """(points, bonus) for ``correct`` of ``total``; compared exactly, not on a rounded percent."""
    policy = rubric.accuracy
    reached = [t.points for t in policy.thresholds if correct * 100 >= t.at_least * total]
    bonus = policy.bonus.points if correct * 100 >= policy.bonus.at_least * total else 0
    return (max(reached) if reached else 0), bonus


def near_threshold(rubric: Rubric, accuracy: float) -> float | None:
    """The threshold (the bonus's included) that ``accuracy`` is within the rubric's borderline
    margin of, the closest one; None when it is near none. The one definition of "borderline": the
    class page's list and the re-runs with more seeds (grader.seeds) both use it."""
    policy = rubric.accuracy
    levels = [t.at_least for t in policy.thresholds] + ([policy.bonus.at_least] if policy.bonus.points else [])
    near = min(levels, key=lambda level: abs(accuracy - level))
    return near if abs(accuracy - near) <= policy.borderline_margin else None


@dataclass(frozen=True)
class Band:
    """Where an accuracy stands on the rubric's scale, for a student reading `grader check --run`."""

    points: int
    bonus: int
    reached: float | None  # the highest threshold reached (percent)
    next_at: float | None  # the next threshold (percent), None at the top
    next_gain: str | None  # what it adds: "84 points", "the 5 bonus points"


def band(rubric: Rubric, accuracy: float) -> Band:
    """The band of ``accuracy`` (percent, as measured) and the next threshold above it."""
    policy = rubric.accuracy
    reached = [t for t in policy.thresholds if accuracy >= t.at_least]
    points = max((t.points for t in reached), default=0)
    bonus = policy.bonus.points if policy.bonus.points and accuracy >= policy.bonus.at_least else 0
    above = [t for t in policy.thresholds if t.at_least > accuracy and t.points > points]
    if above:
        nxt = min(above, key=lambda t: t.at_least)
        next_at, gain = nxt.at_least, f"{nxt.points} points"
    elif policy.bonus.points and not bonus:
        next_at, gain = policy.bonus.at_least, f"the {policy.bonus.points} bonus points"
    else:
        next_at, gain = None, None
    return Band(points, bonus, max((t.at_least for t in reached), default=None), next_at, gain)


def score(rubric: Rubric, checks: tuple[Check, ...], record: ExecutionRecord | None,
          measurement: Measurement | None, tampering: tuple[str, ...] = ()) -> Score:
    """Decide status and points. Evidence of tampering with the grader outranks everything, then a
    broken rule (the run's verdict where it decided, else the static one; a failed run is named
    beside it), then a failed run."""
    max_score = rubric.accuracy.max_points
    if tampering:
        more = f" (and {len(tampering) - 1} more)" if len(tampering) > 1 else ""
        return Score(Status.ERROR, 0, max_score, 0, f"the notebook tampers with the grader: {tampering[0]}{more}")
    violations = [c for c in effective(checks) if c.violated]
    if violations:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        failed = (f"; the run also failed: {record.reason}" if record is not None and record.status is not Status.GRADED
                  and record.reason else "")
        return Score(Status.VIOLATION, rubric.violation_points, max_score, 0,
                     f"rule broken: {first.message}{more}{failed}")
    if record is None or measurement is None:
        return Score(Status.GRADED, 0, max_score, 0, "not run (static checks only)")
    if record.status is not Status.GRADED:
        return Score(record.status, 0, max_score, 0, record.reason)
    if measurement.correct is None or measurement.total is None:
        return Score(Status.ERROR, 0, max_score, 0, measurement.problem or "no accuracy could be measured")
    points, bonus = accuracy_points(rubric, measurement.correct, measurement.total)
    return Score(Status.GRADED, points, max_score, bonus, None)
