"""Rubric + rule verdicts + run + measurement -> Score, and the rubric's accuracy scale: the one
threshold comparison (``reaches``), its levels and bands. Pure policy, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from grader.model.findings import RULE_BROKEN
from grader.model.results import Check, ExecutionRecord, Measurement, Score, Status
from grader.model.rubric import Rubric
from grader.scoring.late import apply as apply_late


@dataclass(frozen=True)
class Rate:
    """An accuracy as the counts it was measured from (compared exactly, not as a rounded
    percent)."""

    correct: int
    total: int


def percent(correct: int | None, total: int | None, accuracy: float | None) -> Rate | float | None:
    """A result's accuracy for comparing with thresholds: its counts where it has them, else the
    percent."""
    if correct is not None and total:
        return Rate(correct, total)
    return accuracy


def reaches(accuracy: Rate | float, at_least: float) -> bool:
    """The one threshold comparison: on the counts where known, never on a rounded percent."""
    if isinstance(accuracy, Rate):
        return accuracy.correct * 100 >= at_least * accuracy.total
    return accuracy >= at_least


def accuracy_points(rubric: Rubric, correct: int, total: int) -> tuple[int, int]:
    """(points, bonus) for ``correct`` of ``total``."""
    policy, accuracy = rubric.accuracy, Rate(correct, total)
    reached = [t.points for t in policy.thresholds if reaches(accuracy, t.at_least)]
    bonus = policy.bonus.points if reaches(accuracy, policy.bonus.at_least) else 0
    return (max(reached) if reached else 0), bonus


@dataclass(frozen=True)
class Level:
    """One threshold of the rubric's scale (the bonus's included), and whether an accuracy reached
    it."""

    at_least: float
    points: int
    bonus: bool
    reached: bool


def scale(rubric: Rubric, accuracy: Rate | float | None) -> tuple[Level, ...]:
    """The rubric's thresholds, then the bonus (where it gives points), each marked reached or
    not."""
    policy = rubric.accuracy
    steps = [(t.at_least, t.points, False) for t in policy.thresholds]
    steps += [(policy.bonus.at_least, policy.bonus.points, True)] if policy.bonus.points else []
    return tuple(
        Level(at, points, bonus, accuracy is not None and reaches(accuracy, at))
        for at, points, bonus in steps
    )


def near_threshold(rubric: Rubric, accuracy: float) -> float | None:
    """The threshold (the bonus's included) that ``accuracy`` is within the rubric's borderline
    margin of, the closest one; None when it is near none. The one definition of "borderline": the
    class page's list and the re-runs with more seeds (grader.scoring.seeds) both use it."""
    policy = rubric.accuracy
    levels = [t.at_least for t in policy.thresholds] + (
        [policy.bonus.at_least] if policy.bonus.points else []
    )
    near = min(levels, key=lambda level: abs(accuracy - level))
    return near if abs(accuracy - near) <= policy.borderline_margin else None


@dataclass(frozen=True)
class Band:
    """Where an accuracy stands on the rubric's scale: its points, and the next threshold above
    it."""

    points: int
    bonus: int
    reached: float | None  # the highest threshold reached (percent)
    next_at: float | None  # the next threshold (percent), None at the top
    next_gain: str | None  # what it adds: "84 points", "the 5 bonus points"


def band(rubric: Rubric, accuracy: Rate | float) -> Band:
    """The band of ``accuracy`` (see ``percent``) and the next threshold above it."""
    levels = scale(rubric, accuracy)
    reached = [level for level in levels if level.reached and not level.bonus]
    points = max((level.points for level in reached), default=0)
    bonus = next((level.points for level in levels if level.bonus and level.reached), 0)
    above = [
        level for level in levels if not level.reached and not level.bonus and level.points > points
    ]
    next_at: float | None
    gain: str | None
    if above:
        nxt = min(above, key=lambda level: level.at_least)
        next_at, gain = nxt.at_least, f"{nxt.points} points"
    else:
        extra = next((level for level in levels if level.bonus and not level.reached), None)
        next_at = extra.at_least if extra else None
        gain = f"the {extra.points} bonus points" if extra else None
    return Band(
        points, bonus, max((level.at_least for level in reached), default=None), next_at, gain
    )


def score(
    rubric: Rubric,
    checks: tuple[Check, ...],
    record: ExecutionRecord | None,
    measurement: Measurement | None,
    tampering: tuple[str, ...] = (),
    late_days: int = 0,
    review: str | None = None,
) -> Score:
    """Decide status and points, then the late policy. Evidence of tampering with the grader
    outranks
    everything, then a broken rule (the run's verdict where it decided, else the static one; a
    failed
    run is named beside it), then a failed run, then what sends a graded run to review (the
    measurement's reason, an undecided rule, else ``review``: the code's own)."""
    return apply_late(
        _verdict(rubric, checks, record, measurement, tampering, review), late_days, rubric.late
    )


def counted(rubric: Rubric, correct: int, total: int, late_days: int) -> Score:
    """The score of ``correct`` of ``total`` in a run that broke no rule, after the late policy (a
    borderline result's chosen seed run, scoring/seeds.py)."""
    points, bonus = accuracy_points(rubric, correct, total)
    return apply_late(
        Score(Status.GRADED, points, rubric.accuracy.max_points, bonus, None),
        late_days,
        rubric.late,
    )


def _verdict(
    rubric: Rubric,
    checks: tuple[Check, ...],
    record: ExecutionRecord | None,
    measurement: Measurement | None,
    tampering: tuple[str, ...],
    review: str | None,
) -> Score:
    max_score = rubric.accuracy.max_points
    if tampering:
        more = f" (and {len(tampering) - 1} more)" if len(tampering) > 1 else ""
        return Score(
            Status.ERROR,
            0,
            max_score,
            0,
            f"the notebook tampers with the grader: {tampering[0]}{more}",
        )
    violations = [c for c in effective(checks) if c.violated]
    if violations:
        first = violations[0]
        more = f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""
        failed = (
            f"; the run also failed: {record.reason}"
            if record is not None and record.status is not Status.GRADED and record.reason
            else ""
        )
        return Score(
            Status.VIOLATION,
            rubric.violation_points,
            max_score,
            0,
            f"{RULE_BROKEN}{first.message}{more}{failed}",
        )
    if record is None or measurement is None:
        return Score(Status.GRADED, 0, max_score, 0, "not run (static checks only)")
    if record.status is not Status.GRADED:
        return Score(record.status, 0, max_score, 0, record.reason)
    undecided = [c for c in effective(checks) if c.ok is None and c.stage == "run"]
    if measurement.review is not None or undecided or review is not None:
        pending = (
            accuracy_points(rubric, measurement.correct, measurement.total)
            if measurement.correct is not None and measurement.total
            else None
        )
        why = measurement.review or (
            f"{undecided[0].id} could not be decided: {undecided[0].message}"
            if undecided
            else review
        )
        return Score(Status.REVIEW, 0, max_score, 0, f"to review: {why}", pending)
    if measurement.correct is None or measurement.total is None:
        return Score(
            Status.ERROR, 0, max_score, 0, measurement.problem or "no accuracy could be measured"
        )
    points, bonus = accuracy_points(rubric, measurement.correct, measurement.total)
    return Score(Status.GRADED, points, max_score, bonus, None)


def effective(checks: tuple[Check, ...]) -> tuple[Check, ...]:
    """The verdicts that count: a rule the run decided is judged by the run (it saw the model that
    was
    really trained); the static verdict stands where the run did not decide or did not happen."""
    decided = {c.id for c in checks if c.stage == "run" and c.ok is not None}
    return tuple(c for c in checks if c.stage == "run" or c.id not in decided)


def disagreements(checks: tuple[Check, ...]) -> tuple[str, ...]:
    """Notes for the rules where the static and the run-time verdicts are both decided and
    differ."""
    static = {c.id: c.ok for c in checks if c.stage == "static" and c.ok is not None}
    run = {c.id: c.ok for c in checks if c.stage == "run" and c.ok is not None}
    return tuple(
        f"{rule}: the static check says {'ok' if static[rule] else 'violated'}, the run says "
        f"{'ok' if run[rule] else 'violated'}"
        for rule in static
        if rule in run and static[rule] != run[rule]
    )
