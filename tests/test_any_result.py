"""Every Result the judge can produce renders: the pages, the gradebook, the LMS files, CI and
Gradescope's outputs, the terminal's lines (hypothesis over the Result's fields); a page that
still fails is replaced by one saying so and never costs the class its other pages; and a printed
accuracy is never called a mismatch without a measured one. No kernel, no browser."""

from __future__ import annotations

import base64
import csv
import io
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
from markupsafe import escape

from grader.judge.measure import measure, reported_findings
from grader.model.findings import RULE_BROKEN, Flag
from grader.model.probe_facts import parse
from grader.model.results import Check, ExecutionRecord, Result, SeedRun, Status
from grader.model.rubric import Rubric
from grader.outputs import ci, gradescope, pages
from grader.outputs.exports import CANVAS_COLUMNS, Roster
from grader.outputs.progress import PlainProgress, Progress
from grader.outputs.text import check_text, markdown_text, render
from grader.scoring.overrides import Override

ACCOUNTS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", fullmatch=True)  # the rubric's pattern
HOSTILE = st.sampled_from(
    [
        "<script>alert(1)</script>",
        '=HYPERLINK("x")',
        "a\u202eb",
        "{{ 7*7 }}",
        "%s %d",
        "\x1b]8;;http://x\x07",
        "line\nbreak\r\n",
        "",
        "蛇 🐍",
        "-1",
        "&amp; | `*_`",
    ]
)
TEXT = st.one_of(
    st.text(max_size=40),
    HOSTILE,
    st.builds(lambda t, n: t * n, st.text(min_size=1, max_size=4), st.integers(100, 2000)),
)
NUMBER = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.floats(-5, 105))
PERCENT = st.one_of(st.none(), NUMBER)
INT = st.one_of(st.integers(-3, 12), st.integers(-(2**63), 2**63))
OPT_INT = st.one_of(st.none(), INT)
FLAGS = st.lists(st.sampled_from(list(Flag)), unique=True, max_size=4).map(tuple)
STATUS = st.sampled_from(list(Status))

CHECKS = st.builds(
    Check,
    id=st.one_of(st.sampled_from(["epochs", "valid_size", "linear_layers"]), TEXT),
    ok=st.sampled_from([True, False, None]),
    message=TEXT,
    file=st.one_of(st.none(), TEXT),
    cell=OPT_INT,
    line=OPT_INT,
    stage=st.sampled_from(["static", "run", "other"]),
    excerpt=st.lists(st.tuples(INT, TEXT), max_size=3).map(tuple),
    instead=TEXT,
    place=TEXT,
)
SEED_RUNS = st.builds(
    SeedRun,
    seed=INT,
    status=STATUS,
    accuracy=PERCENT,
    correct=OPT_INT,
    total=OPT_INT,
    reported_accuracy=PERCENT,
    reason=st.one_of(st.none(), TEXT),
    flags=FLAGS,
)
CURVES = st.one_of(
    st.none(),
    st.just({"loss": []}),
    st.just({"every": 0, "first_step": "x", "loss": None}),
    st.builds(
        lambda n, every, validation: {
            "every": every,
            "first_step": 1,
            "loss": [2.0 / (k + 1) for k in range(n)],
            "lr": [0.01] * n,
            "epochs": [0],
            "validation": validation,
            "test": [],
        },
        st.integers(0, 30),
        st.integers(1, 5),
        st.lists(st.tuples(st.integers(0, 30), NUMBER), max_size=3),
    ),
)
CONFUSION = st.one_of(
    st.none(),
    st.lists(st.lists(st.integers(-5, 1000), max_size=12).map(tuple), max_size=12).map(tuple),
    st.just(tuple(tuple(90 if i == j else 1 for j in range(10)) for i in range(10))),
)


WRONG = st.lists(
    st.tuples(st.integers(0, 9999), st.integers(-1, 12), st.integers(-1, 12), st.floats(0, 1)),
    max_size=3,
).map(tuple)
OVERRIDES = st.builds(
    Override,
    points=st.one_of(st.none(), st.integers(0, 60)),
    bonus=st.one_of(st.none(), st.integers(0, 5)),
    report_points=st.one_of(st.none(), st.integers(0, 40)),
    note=st.one_of(st.none(), TEXT),
)
FIELDS = st.fixed_dictionaries(
    dict(
        source=TEXT,
        status=STATUS,
        accuracy=PERCENT,
        reported_accuracy=PERCENT,
        score=INT,
        max_score=INT,
        bonus=INT,
        checks=st.lists(CHECKS, max_size=3).map(tuple),
        flags=FLAGS,
        duration_s=NUMBER,
        reason=st.one_of(st.none(), TEXT, TEXT.map(lambda t: RULE_BROKEN + t)),
        measured_by=st.sampled_from([None, "student-test-pass", "probe-pass", "model-at-error"]),
        notes=st.lists(TEXT, max_size=2).map(tuple),
        report_pdf=st.one_of(st.none(), TEXT),
        peak_memory_mb=PERCENT,
        submitted_at=st.one_of(st.none(), TEXT),
        late_days=OPT_INT,
        confusion=CONFUSION,
        environment=st.one_of(st.none(), TEXT),
        curve=CURVES,
        correct=OPT_INT,
        total=OPT_INT,
        seed_runs=st.lists(SEED_RUNS, max_size=3).map(tuple),
        seed_policy=st.sampled_from([None, "fixed", "median", "best", "<b>odd</b>"]),
        seed_accuracy=PERCENT,
        seed_chosen=OPT_INT,
        wrong=WRONG,
        saved_accuracy=PERCENT,
        report_accuracy=PERCENT,
        recomputed=st.booleans(),
        pending_score=OPT_INT,
        pending_bonus=OPT_INT,
    )
)


@st.composite
def classes(draw: st.DrawFn) -> tuple[list[Result], dict[str, Override]]:
    """One to three students, each result any status with any accuracy (None included), flags,
    checks,
    pending points, seed runs..., and the TA's overrides for some of them."""
    accounts = draw(st.lists(ACCOUNTS, min_size=1, max_size=3, unique_by=str.lower))
    found = []
    for account in accounts:
        fields = draw(FIELDS)
        if fields["seed_runs"] and draw(st.booleans()):  # the policy's run is one of them
            fields["seed_chosen"] = draw(st.sampled_from([run.seed for run in fields["seed_runs"]]))
        images = [None, "not base64!", base64.b64encode(bytes(784 * len(fields["wrong"]))).decode()]
        found.append(Result(student=account, wrong_images=draw(st.sampled_from(images)), **fields))
    overrides = {a: draw(OVERRIDES) for a in accounts if draw(st.booleans())}
    return found, overrides


_folders = itertools.count()


def _graded(account: str, accuracy: float | None, **fields: Any) -> Result:
    return Result(
        **{
            **dict(
                student=account,
                source=f"HW3_{account}.ipynb",
                status=Status.GRADED,
                accuracy=accuracy,
                reported_accuracy=accuracy,
                score=60,
                max_score=60,
                bonus=5,
                checks=(),
                flags=(),
                duration_s=50.0,
            ),
            **fields,
        }
    )


@pytest.mark.slow
@example(
    (
        [
            _graded(
                "huge",
                1.7e308,
                seed_runs=(SeedRun(0, Status.GRADED, 1.7e308, 1, 1),),
                seed_accuracy=None,
            ),
            # the mean's sum overflows
            _graded("huger", 1.7e308, duration_s=-1e308, total=0, correct=-1),
        ],
        {},
    )
)
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(classes())
def test_every_result_renders_everywhere(
    tmp_path: Path, rubric: Rubric, drawn: tuple[list[Result], dict[str, Override]]
) -> None:
    found, overrides = drawn
    out = tmp_path / str(next(_folders))
    for r in found:
        r.write(out / "results" / f"{r.student}.json")
    roster = Roster(
        ("account", *CANVAS_COLUMNS, "Username"),
        {
            r.student: {
                "account": r.student,
                **dict.fromkeys(CANVAS_COLUMNS, "x"),
                "Student": r.student,
                "Username": r.student,
            }
            for r in found
        },
    )
    # what `grader grade` and `grader report` end with
    said = pages.rerender(out, rubric, overrides, roster)
    assert said[0] == f"{len(found)} results in {out / 'results'}"
    # the real pages, no stand-in
    assert not [line for line in said if "could not be rendered" in line], said
    index = (out / "index.html").read_text(encoding="utf-8")
    for r in found:
        shown = str(escape(r.student))
        assert f'href="students/{shown}.html">{shown}</a>' in index
        for folder in ("students", "feedback"):
            page = (out / folder / f"{r.student}.html").read_text(encoding="utf-8")
            assert f"<h1>{rubric.homework}: {shown}</h1>" in page and 'id="verdict"' in page
    gradebook = list(csv.reader(io.StringIO((out / "gradebook.csv").read_text(encoding="utf-8"))))
    assert sorted(row[0] for row in gradebook[1:]) == sorted(r.student for r in found)
    for name in ("canvas.csv", "moodle.csv"):
        rows = list(csv.reader(io.StringIO((out / name).read_text(encoding="utf-8"))))
        assert {r.student for r in found} <= {cell for row in rows[1:] for cell in row}
    for r in found:
        _ci_and_terminal(r, rubric)


def _ci_and_terminal(r: Result, rubric: Rubric) -> None:
    """What `grader ci`, Gradescope, `grader check` and the batch's terminal lines make of ``r``."""
    text = check_text(r, rubric, "here, CPU")
    assert f"({r.student})" in text and r.student in check_text(r, rubric, None)
    for lines in (None, {}):
        outcome = ci.Outcome(r, "HW3.ipynb", True, rubric, ci.rule_verdicts(r.checks, lines))
        assert f"(account {markdown_text(r.student)})" in ci.summary_markdown(
            outcome, ci.github_annotations(outcome)
        )
        assert f'<property name="account" value="{escape(r.student)}"/>' in ci.junit_xml(outcome)
        assert ci.classroom_output(outcome).startswith("result=")
        assert json.dumps(gradescope.results(outcome, text))
    stream = io.StringIO()
    PlainProgress(stream, 1)(Progress(r, 1, 1, False, ()))
    assert r.student in stream.getvalue()
    summary = render(
        "summary.txt.j2",
        results=[r],
        skipped=[],
        out=Path("out"),
        cached=0,
        seconds=1.0,
        counts=[(r.status.value, 1)],
    )
    assert r.student in summary


VIOLATION = Result(
    student="s086",
    source="HW3_s086.ipynb",
    status=Status.VIOLATION,
    accuracy=None,
    reported_accuracy=86.32,
    score=0,
    max_score=60,
    bonus=0,
    checks=(Check("epochs", False, "n_epochs = 3, not 10", "HW3_s086.ipynb", 4, 2),),
    flags=(Flag.REPORTED_ACCURACY_MISMATCH,),
    duration_s=3600.0,
    reason=f"{RULE_BROKEN}n_epochs = 3, not 10; the run also failed: the notebook "
    "reached the time limit",
)


def test_a_timed_out_violation_with_a_printed_accuracy_and_the_mismatch_flag_renders(
    tmp_path: Path, rubric: Rubric
) -> None:
    """The batch that crashed in student.html.j2 (`"%.2f%%"|format(None)`): its result, as stored
    before the judge's fix, goes through the end of `grader grade` and `grader report`."""
    other = _graded("s090", 90.08)
    for r in (VIOLATION, other):
        r.write(tmp_path / "results" / f"{r.student}.json")
    said = pages.rerender(tmp_path, rubric, {})
    assert said == (f"2 results in {tmp_path / 'results'}",)
    page = (tmp_path / "students" / "s086.html").read_text(encoding="utf-8")
    assert (
        'class="banner violation"' in page
        and "A rule of the homework was broken: n_epochs = 3" in page
    )
    # not set against a measured accuracy it does not have
    assert "The notebook printed <b>" not in page
    assert (
        "The notebook printed 86.32%; the grader measured no accuracy to compare it with." in page
    )
    assert "reported-accuracy-mismatch" in page  # the flag it carries is still shown
    gradebook = list(
        csv.DictReader(io.StringIO((tmp_path / "gradebook.csv").read_text(encoding="utf-8")))
    )
    assert [
        (row["account"], row["accuracy"], row["printed_accuracy"], row["status"])
        for row in gradebook
    ] == [("s086", "", "86.32", "violation"), ("s090", "90.08", "90.08", "graded")]
    assert "s086" in (tmp_path / "index.html").read_text(encoding="utf-8")
    assert (tmp_path / "feedback" / "s086.html").is_file() and (tmp_path / "feedback.zip").is_file()


def test_a_page_that_cannot_be_rendered_costs_the_class_nothing(
    tmp_path: Path, rubric: Rubric, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A renderer failing for one student (a bug still to find) gives that student a page saying so
    in one line, tells the TA, and every other page, the gradebook and the class page are
    written."""
    broken = pages.student_page

    def student_page(g: Any, *args: Any, **kwargs: Any) -> pages.StudentPage:
        if g.result.student == "s086":
            raise TypeError("must be real number, not NoneType")
        return broken(g, *args, **kwargs)

    monkeypatch.setattr(pages, "student_page", student_page)
    other = _graded("s090", 90.08)
    for r in (VIOLATION, other):
        r.write(tmp_path / "results" / f"{r.student}.json")
    said = pages.rerender(tmp_path, rubric, {})
    assert said[1:] == (
        "s086's page could not be rendered (TypeError: must be real number, not NoneType); a page "
        "saying so was written in its place",
    )
    ta = (tmp_path / "students" / "s086.html").read_text(encoding="utf-8")
    assert "This page could not be rendered</b>: TypeError: must be real number, not NoneType" in ta
    assert 'href="../results/s086.json"' in ta
    sent = (tmp_path / "feedback" / "s086.html").read_text(encoding="utf-8")
    assert "could not be rendered" in sent and "TypeError" not in sent and "results/" not in sent
    assert 'class="banner graded"' in (tmp_path / "students" / "s090.html").read_text(
        encoding="utf-8"
    )
    assert "s086" in (tmp_path / "index.html").read_text(encoding="utf-8")
    assert (tmp_path / "gradebook.csv").read_text(encoding="utf-8").count("\ns0") == 2


@settings(max_examples=60, deadline=None, derandomize=True)
@given(PERCENT, st.floats(0, 100), st.booleans(), st.booleans())
def test_no_mismatch_is_raised_without_a_measured_accuracy(
    printed: float | None, tolerance: float, compare: bool, finished: bool
) -> None:
    """A printed figure is compared with a measured accuracy only: nothing measured, no
    `reported-accuracy-mismatch`, whether the test labels were shown or hidden."""
    found = reported_findings(printed, None, tolerance, compare, finished)
    assert Flag.REPORTED_ACCURACY_MISMATCH not in [f.flag for f in found]


def test_a_run_stopped_after_printing_an_accuracy_is_not_called_a_mismatch() -> None:
    """A notebook stopped at the time limit (or by an error) after printing 86.32% is measured as
    its
    model was then: a note of the result, never its accuracy, so not compared with what it
    printed."""
    assert [f.flag for f in reported_findings(86.32, 55.0, 0.5, True, True)] == [
        Flag.REPORTED_ACCURACY_MISMATCH
    ]
    labels = tuple(i % 10 for i in range(100))
    probe = parse(
        {
            "test_passes": [],
            "probe_pass": {
                "predictions": [y if i < 55 else (y + 1) % 10 for i, y in enumerate(labels)]
            },
            "model": {},
        }
    )
    printed = "Test Accuracy (Overall): 86.32% (8632/10000)"
    for status in (Status.TIMEOUT, Status.ERROR):
        record = ExecutionRecord(
            status, "the notebook reached the time limit", 7, 3600.0, None, probe, printed
        )
        for compare in (True, False):
            m = measure(record, probe, labels, 0.5, compare_reported=compare)
            # the model at the time limit
            assert m.accuracy == 55.0 and m.reported_accuracy == 86.32
            assert Flag.REPORTED_ACCURACY_MISMATCH not in m.flags, (status, compare, m.findings)
    finished = ExecutionRecord(Status.GRADED, None, None, 50.0, None, probe, printed)
    assert Flag.REPORTED_ACCURACY_MISMATCH in measure(finished, probe, labels, 0.5).flags
