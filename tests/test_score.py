from __future__ import annotations

import pytest

from grader.results import Check, ExecutionRecord, Measurement, Status
from grader.rubric import Rubric
from grader.score import accuracy_points, score

CLEAN = (Check("epochs", True, "ok"),)
RAN = ExecutionRecord(Status.GRADED, None, None, 10.0, None, None, "")


@pytest.mark.parametrize(
    ("correct", "points", "bonus"),
    [(7999, 0, 0), (8000, 30, 0), (8399, 30, 0), (8400, 50, 0), (8899, 50, 0), (8900, 60, 0), (8999, 60, 0), (9000, 60, 5), (10000, 60, 5)],
)
def test_thresholds_are_exact(rubric: Rubric, correct: int, points: int, bonus: int) -> None:
    assert accuracy_points(rubric, correct, 10000) == (points, bonus)


def _measured(correct: int) -> Measurement:
    return Measurement(correct / 100, None, correct, 10000, "student-test-pass", (), ())


def test_graded_run(rubric: Rubric) -> None:
    s = score(rubric, CLEAN, RAN, _measured(9028))
    assert (s.status, s.score, s.max_score, s.bonus) == (Status.GRADED, 60, 60, 5)


def test_violation_costs_the_automatic_points(rubric: Rubric) -> None:
    broken = (Check("epochs", False, "cell 5, line 1: n_epochs is 20; the homework fixes it at 10"),
              Check("epochs", True, "trained for 10 passes", stage="run"))
    s = score(rubric, broken, RAN, _measured(9100))
    assert (s.status, s.score, s.bonus) == (Status.VIOLATION, 0, 0)
    assert s.reason is not None and "n_epochs is 20" in s.reason


def test_failed_runs_score_zero_with_their_reason(rubric: Rubric) -> None:
    timed_out = ExecutionRecord(Status.TIMEOUT, "cell 7: still running", 7, 99.0, None, None, "")
    s = score(rubric, CLEAN, timed_out, _measured(9000))
    assert (s.status, s.score, s.reason) == (Status.TIMEOUT, 0, "cell 7: still running")
    nothing = Measurement(None, None, None, None, None, (), (), "the notebook never built a model")
    s = score(rubric, CLEAN, RAN, nothing)
    assert (s.status, s.reason) == (Status.ERROR, "the notebook never built a model")
