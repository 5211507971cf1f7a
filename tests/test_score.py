from __future__ import annotations

import pytest

from grader.model.results import Check, ExecutionRecord, Measurement, Status
from grader.model.rubric import Rubric
from grader.scoring.score import accuracy_points, score

CLEAN = (Check("epochs", True, "ok"),)
RAN = ExecutionRecord(Status.GRADED, None, None, 10.0, None, None, "")


@pytest.mark.parametrize(
    ("correct", "points", "bonus"),
    [
        (7999, 0, 0),
        (8000, 30, 0),
        (8399, 30, 0),
        (8400, 50, 0),
        (8899, 50, 0),
        (8900, 60, 0),
        (8999, 60, 0),
        (9000, 60, 5),
        (10000, 60, 5),
    ],
)
def test_thresholds_are_exact(rubric: Rubric, correct: int, points: int, bonus: int) -> None:
    assert accuracy_points(rubric, correct, 10000) == (points, bonus)


def _measured(correct: int) -> Measurement:
    return Measurement(correct / 100, None, correct, 10000, "student-test-pass", ())


def test_graded_run(rubric: Rubric) -> None:
    s = score(rubric, CLEAN, RAN, _measured(9028))
    assert (s.status, s.score, s.max_score, s.bonus) == (Status.GRADED, 60, 60, 5)


def test_violation_costs_the_automatic_points(rubric: Rubric) -> None:
    broken = (
        Check("epochs", True, "n_epochs = 10"),
        Check("epochs", False, "the graded model was trained for 20 passes", stage="run"),
    )
    s = score(rubric, broken, RAN, _measured(9100))
    assert (s.status, s.score, s.bonus) == (Status.VIOLATION, 0, 0)
    assert s.reason is not None and "trained for 20 passes" in s.reason


def test_a_static_violation_counts_unless_the_run_decided_the_rule(rubric: Rubric) -> None:
    static = Check("linear_layers", False, "cell 5, line 1: adds a Conv2d layer")
    assert score(rubric, (static,), RAN, _measured(9100)).status is Status.VIOLATION
    assert (
        score(
            rubric, (static, Check("linear_layers", None, "?", stage="run")), RAN, _measured(9100)
        ).status
        is Status.VIOLATION
    )
    decided = (static, Check("linear_layers", True, "exactly the three Linear layers", stage="run"))
    assert score(rubric, decided, RAN, _measured(9100)).status is Status.GRADED


def test_a_violation_in_a_failed_run_names_both(rubric: Rubric) -> None:
    crashed = ExecutionRecord(
        Status.ERROR, "cell 9, line 3: AttributeError: stepp", 9, 9.0, None, None, ""
    )
    broken = (Check("epochs", False, "the graded model was trained for 20 passes", stage="run"),)
    s = score(rubric, broken, crashed, _measured(9100))
    assert s.status is Status.VIOLATION and s.reason is not None
    assert (
        "trained for 20 passes" in s.reason
        and ("the run also failed: cell 9, line 3: AttributeError") in s.reason
    )


def test_failed_runs_score_zero_with_their_reason(rubric: Rubric) -> None:
    timed_out = ExecutionRecord(Status.TIMEOUT, "cell 7: still running", 7, 99.0, None, None, "")
    s = score(rubric, CLEAN, timed_out, _measured(9000))
    assert (s.status, s.score, s.reason) == (Status.TIMEOUT, 0, "cell 7: still running")
    nothing = Measurement(None, None, None, None, None, (), "the notebook never built a model")
    s = score(rubric, CLEAN, RAN, nothing)
    assert (s.status, s.reason) == (Status.ERROR, "the notebook never built a model")
