"""The batch's progress: plain lines for logs, a live bar on a terminal."""

from __future__ import annotations

import io

from grader.model.results import Result, Status
from grader.outputs.progress import Eta, LiveProgress, PlainProgress, progress_display
from grader.pipeline.batch import Progress


def _result(student: str, accuracy: float | None = 91.25) -> Result:
    return Result(
        student=student,
        source=f"HW3_{student}.ipynb",
        status=Status.GRADED,
        accuracy=accuracy,
        reported_accuracy=None,
        score=60,
        max_score=60,
        bonus=5,
        checks=(),
        flags=(),
        duration_s=42.0,
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _events() -> list[Progress]:
    return [
        Progress(None, 0, 3, False, ("ann",)),
        Progress(None, 0, 3, False, ("ann", "bo")),
        Progress(_result("ann"), 1, 3, False, ("bo",)),
        Progress(_result("bo"), 2, 3, True, ()),
        Progress(_result("cy", None), 3, 3, False, ()),
    ]


def test_plain_lines_one_per_finished_submission() -> None:
    out = io.StringIO()
    with progress_display(out, 2) as show:
        assert isinstance(show, PlainProgress)
        for event in _events():
            show(event)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "\x1b" not in out.getvalue()  # no terminal codes in a CI log
    assert (
        lines[0].startswith("[1/3] ann")
        and "91.25%" in lines[0]
        and "60/60 +5" in lines[0]
        and " left]" in lines[0]  # minutes:seconds left, not a time of day
    )
    assert lines[1].startswith("[2/3] bo") and "(cached)" in lines[1]
    assert lines[2].startswith("[3/3] cy") and " left]" not in lines[2]


def test_a_terminal_gets_the_live_bar_with_who_is_running() -> None:
    out = _Terminal()
    with progress_display(out, 2) as show:
        assert isinstance(show, LiveProgress)
        show(_events()[1])
        show.bar.refresh()
        assert "0/3" in out.getvalue() and "running: ann, bo" in out.getvalue()
        for event in _events()[2:]:
            show(event)
    text = out.getvalue()
    assert "ann" in text and "91.25%" in text and "3/3" in text


def test_eta_counts_only_fresh_results_and_the_jobs_at_once() -> None:
    eta = Eta(width=2)
    eta.started -= 100  # 100 s into the batch
    # a cached result says nothing of speed
    assert eta.update(Progress(_result("a"), 1, 11, True, ())) is None
    # 100 s x 9 left x (1 of 2 slots)
    assert eta.update(Progress(_result("b"), 2, 11, False, ())) == "7:30"
    assert eta.update(Progress(_result("c"), 3, 11, False, ())) == "6:40"  # 50 s a result, 8 left
