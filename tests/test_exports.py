"""Grades out: Canvas's and Moodle's import CSVs from a roster, a roster student without a
submission shown as missing, and no student text a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from grader.cli import ExitCode, main
from grader.model.context import Context
from grader.model.errors import GraderError
from grader.outputs.exports import CANVAS_COLUMNS, load_roster
from grader.pipeline.batch import grade_directory
from grader.pipeline.executors.local import LocalExecutor
from grader.run.slots import plan_slots
from grader.scoring.overrides import for_batch

FIXTURES = Path(__file__).parent / "fixtures"
ROSTER = (
    "Student,ID,SIS User ID,SIS Login ID,Section,Email address,account\n"
    '"Wang, Amy",101,S001,amy01,Sec A,amy@uni.edu,amy01\n'
    "Bob Lee,102,S002,bob02,Sec A,bob@uni.edu,bob02\n"
    "Cat Chen,103,S003,cat03,Sec B,cat@uni.edu,cat03\n"
)


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_canvas_and_moodle_files_from_a_roster(tmp_path: Path, tiny_context: Context) -> None:
    folder = tmp_path / "class"
    folder.mkdir()
    for account in ("amy01", "bob02"):
        shutil.copy(FIXTURES / "HW3_tinyok.py", folder / f"HW3_{account}.py")
    (tmp_path / "roster.csv").write_text(ROSTER)
    out = tmp_path / "out"
    out.mkdir()
    (out / "overrides.yaml").write_text(
        "amy01: {report_points: 35, note: '=HYPERLINK(\"http://x\")'}\n"
    )
    static = dataclasses.replace(tiny_context, dataset=None)
    shutil.copy(FIXTURES / "HW3_tinyok.py", folder / "HW3_dan04.py")  # graded, not in the roster
    summary = grade_directory(
        folder,
        out,
        static,
        LocalExecutor(plan_slots(1, 2, (), 1, 1)),
        overrides=for_batch(out, None, static.rubric),
        roster=load_roster(tmp_path / "roster.csv"),
    )
    assert summary.warnings[1:] == (
        "overrides: amy01 gets report_points 35, but no report PDF was found for them; "
        "check the report came in, or remove the points",
        "graded but not in the roster (no LMS row): dan04",
        "in the roster with no grade (no submission): cat03",
        _canvas_note(out),
    )
    canvas = _read(out / "canvas.csv")
    assert list(canvas[0]) == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "HW3"]
    by_login = {row["SIS Login ID"]: row for row in canvas}
    assert by_login["amy01"]["HW3"] == "35" and by_login["amy01"]["Student"] == "Wang, Amy"
    # no submission: no grade
    assert by_login["bob02"]["HW3"] == "0" and by_login["cat03"]["HW3"] == ""
    moodle = _read(out / "moodle.csv")
    assert list(moodle[0]) == ["Email address", "HW3", "Feedback"]
    assert {r["Email address"]: r["Feedback"] for r in moodle}["cat@uni.edu"] == (
        "missing: no submission"
    )
    book = {r["account"]: r for r in _read(out / "gradebook.csv")}
    assert book["cat03"]["status"] == "missing" and book["cat03"]["reason"] == "no submission found"
    assert book["amy01"]["override_note"].startswith("'=HYPERLINK")  # text, not a formula
    index = (out / "index.html").read_text()
    assert (
        "In the roster, no submission" in index and "matched no file" in index and "cat03" in index
    )

    (out / "canvas.csv").unlink()
    assert main(["report", str(out), "--roster", str(tmp_path / "roster.csv")]) == ExitCode.OK
    assert _read(out / "canvas.csv") == canvas


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("Student,ID\nA,1\n", "no `account` column"),
        ("account,Name\namy01,Amy\n", "neither Canvas's columns"),
        ("account,Username\namy01,a\namy01,b\n", "account amy01 appears twice (line 3)"),
    ],
)
def test_a_wrong_roster_is_one_line(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(GraderError, match=re.escape(says)):
        load_roster(tmp_path / "r.csv")


def test_a_result_to_review_has_no_grade_until_an_override_settles_it(
    tmp_path: Path, tiny_context: Context
) -> None:
    """review: no total in the gradebook or the LMS files, the withheld points beside it, first in
    the class page's list; an override's points settle it."""
    from grader.intake.read import read_submission
    from grader.model.results import Status
    from grader.outputs.pages import write_batch_reports
    from grader.pipeline.grade import grade_in
    from grader.scoring.overrides import Override

    (tmp_path / "roster.csv").write_text(ROSTER)
    static = dataclasses.replace(tiny_context, dataset=None)
    results = []
    for account in ("amy01", "bob02", "cat03"):
        shutil.copy(FIXTURES / "HW3_tinyok.py", tmp_path / f"HW3_{account}.py")
        results.append(
            grade_in(
                tmp_path / account, read_submission(tmp_path / f"HW3_{account}.py", account), static
            )
        )
    why = "to review: 12 of 200 rows the graded pass fed the model are not test images"
    results[1] = dataclasses.replace(
        results[1],
        status=Status.REVIEW,
        accuracy=91.5,
        reason=why,
        pending_score=60,
        pending_bonus=5,
    )
    results[2] = dataclasses.replace(
        results[2], status=Status.REVIEW, accuracy=85.0, reason=why, pending_score=50
    )
    out = tmp_path / "out"
    out.mkdir()
    write_batch_reports(
        out,
        results,
        static.rubric,
        [],
        {"cat03": Override(points=50, note="checked by hand")},
        load_roster(tmp_path / "roster.csv"),
    )
    book = {r["account"]: r for r in _read(out / "gradebook.csv")}
    assert (
        book["bob02"]["status"] == "review"
        and book["bob02"]["total"] == ""
        and book["bob02"]["pending_points"] == "60+5"
    )
    assert book["cat03"]["total"] == "50" and book["cat03"]["pending_points"] == ""  # settled
    assert {r["SIS Login ID"]: r["HW3"] for r in _read(out / "canvas.csv")}["bob02"] == ""
    feedback = {r["Email address"]: r["Feedback"] for r in _read(out / "moodle.csv")}
    assert "60+5 points withheld until the TA decides" in feedback["bob@uni.edu"]
    index = (out / "index.html").read_text()
    listed = index[index.index("Review first") : index.index("All submissions")]
    assert listed.index("bob02") < listed.index("cat03") and "60+5 points withheld" in listed
    assert "measured 91.50%" in listed


def test_the_gradebook_fills_its_columns_by_one_rule_and_warns_of_report_points_without_a_report(
    tmp_path: Path, rubric: object
) -> None:
    """Printed accuracy and the most a total can reach beside each row; a result to review has no
    automatic points until settled; report points for a student whose PDF is missing are said."""
    from grader.model.results import Result, Status
    from grader.outputs.pages import rerender, write_batch_reports
    from grader.scoring.overrides import Override

    def result(name: str, status: Status, accuracy: float | None, pdf: str | None = None) -> Result:
        return Result(
            student=name,
            source=f"HW3_{name}.ipynb",
            status=status,
            accuracy=accuracy,
            reported_accuracy=95.0 if accuracy else None,
            score=60 if status is Status.GRADED else 0,
            max_score=60,
            bonus=0,
            checks=(),
            flags=(),
            duration_s=1.0,
            report_pdf=pdf,
            pending_score=60 if status is Status.REVIEW else None,
        )

    results = [
        result("ann", Status.GRADED, 89.5, "HW3_Report_ann.pdf"),
        result("bob", Status.VIOLATION, 90.1),
        result("cid", Status.REVIEW, 91.0),
    ]
    (tmp_path / "results").mkdir()
    for r in results:
        r.write(tmp_path / "results" / f"{r.student}.json")
    overrides = {"bob": Override(report_points=20), "ann": Override(report_points=30)}
    write_batch_reports(tmp_path, results, rubric, [], overrides)  # type: ignore[arg-type]
    book = {r["account"]: r for r in _read(tmp_path / "gradebook.csv")}
    assert [book[a]["printed_accuracy"] for a in ("ann", "bob", "cid")] == ["95", "95", "95"]
    assert {book[a]["total_max"] for a in book} == {"105"}
    assert (
        book["ann"]["automatic_score"],
        book["ann"]["points_accuracy"],
        book["ann"]["total"],
    ) == ("60", "89.50", "90")
    assert (
        book["bob"]["automatic_score"],
        book["bob"]["points_accuracy"],
        book["bob"]["total"],
    ) == ("0", "", "20")
    assert (book["cid"]["automatic_score"], book["cid"]["bonus"], book["cid"]["total"]) == (
        "",
        "",
        "",
    )
    said = rerender(tmp_path, rubric, overrides)  # type: ignore[arg-type]
    assert any("bob gets report_points 20, but no report PDF was found" in line for line in said)
    assert not any("ann gets" in line for line in said)


def _stored(out: Path, *results: object) -> None:
    """Results in OUT/results, as a `grader grade` left them (for `grader report` to read)."""
    from grader.model.results import Result

    for r in results:
        assert isinstance(r, Result)
        r.write(out / "results" / f"{r.student}.json")


def _result(name: str, status: str = "graded", **fields: object) -> object:
    from grader.model.results import Result, Status

    shared: dict[str, object] = dict(
        student=name,
        source=f"HW3_{name}.ipynb",
        status=Status(status),
        accuracy=85.0,
        reported_accuracy=85.0,
        score=50,
        max_score=60,
        bonus=0,
        checks=(),
        flags=(),
        duration_s=1.0,
        report_pdf=f"HW3_Report_{name}.pdf",
    )
    return Result(**{**shared, **fields})  # type: ignore[arg-type]


def _canvas_note(out: Path) -> str:
    return (
        'canvas.csv: the roster has no "HW3 (<id>)" column, so the grade column is headed '
        "HW3 and Canvas matches it by name (or creates a new assignment); add that column "
        "(Canvas's own export has it; the id ends the assignment's URL) and run "
        f"`grader report {out} --roster FILE`"
    )


def test_a_report_without_roster_exports_again_with_the_roster_kept_in_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After `grader report --roster FILE`, a later `grader report` (an override changed) writes
    canvas.csv and moodle.csv again from the roster kept in OUT, and says so: never stale grades."""
    out = tmp_path / "out"
    _stored(out, _result("amy01"), _result("bob02", "violation", score=0, accuracy=None))
    (tmp_path / "roster.csv").write_text(ROSTER)
    rubric = ["--rubric", str(Path(__file__).parent.parent / "rubric.yaml")]
    roster = ["--roster", str(tmp_path / "roster.csv")]
    assert main(["report", str(out), *roster, *rubric]) == ExitCode.OK
    assert {r["SIS Login ID"]: r["HW3"] for r in _read(out / "canvas.csv")}["bob02"] == "0"
    capsys.readouterr()
    (tmp_path / "roster.csv").unlink()  # the TA's file moved on; OUT keeps its copy
    (out / "overrides.yaml").write_text("bob02: {points: 40, note: checked by hand}\n")
    assert main(["report", str(out), *rubric]) == ExitCode.OK
    assert {r["SIS Login ID"]: r["HW3"] for r in _read(out / "canvas.csv")}["bob02"] == "40"
    assert {r["Email address"]: r["HW3"] for r in _read(out / "moodle.csv")}["bob@uni.edu"] == "40"
    err = capsys.readouterr().err
    assert f"with the roster kept in {out / 'roster.csv'}" in err and "--roster FILE" in err


def test_an_export_no_roster_can_write_again_is_removed_with_what_to_run(
    tmp_path: Path, rubric: object
) -> None:
    """canvas.csv left by an earlier run (an OUT from before the roster was kept, or a roster with
    no Canvas columns now) would carry old grades: it is removed, in one line saying what to run."""
    from grader.outputs.pages import rerender

    out = tmp_path / "out"
    _stored(out, _result("amy01"))
    stale = "Student,ID,SIS User ID,SIS Login ID,Section,HW3\nWang,101,S001,amy01,A,50\n"
    (out / "canvas.csv").write_text(stale)
    said = rerender(out, rubric, {})  # type: ignore[arg-type]
    assert not (out / "canvas.csv").exists()
    assert said[1:] == (
        f"removed {out / 'canvas.csv'} (written by an earlier run): no roster to "
        f"write it again from; run `grader report {out} --roster FILE`",
    )
    (tmp_path / "moodle.csv").write_text("account,Username\namy01,amy\n")
    (out / "canvas.csv").write_text(stale)
    said = rerender(out, rubric, {}, load_roster(tmp_path / "moodle.csv"))  # type: ignore[arg-type]
    assert not (out / "canvas.csv").exists() and (out / "moodle.csv").is_file()
    assert (
        f"removed {out / 'canvas.csv'} (written by an earlier run): the roster has no columns "
        "for it"
    ) in said


def test_the_ta_note_stays_out_of_everything_a_student_sees(tmp_path: Path, rubric: object) -> None:
    """The override's note is for staff: in gradebook.csv and the TA's page, never in Moodle's
    feedback column, canvas.csv, the page sent back or feedback.zip."""
    import zipfile

    from grader.outputs.pages import write_batch_reports
    from grader.scoring.overrides import Override

    (tmp_path / "roster.csv").write_text(ROSTER)
    note = "plagiarism suspected, ask the chair"
    out = tmp_path / "out"
    out.mkdir()
    results = [_result("amy01"), _result("bob02", "review", score=0, pending_score=50)]
    overrides = {
        "amy01": Override(report_points=30, note=note),
        "bob02": Override(points=45, note=note),
    }
    write_batch_reports(
        out,
        results,
        rubric,
        [],
        overrides,  # type: ignore[arg-type]
        load_roster(tmp_path / "roster.csv"),
    )
    assert note in (out / "gradebook.csv").read_text()
    assert note in (out / "students" / "amy01.html").read_text()
    feedback = {r["Email address"]: r["Feedback"] for r in _read(out / "moodle.csv")}
    assert feedback["bob@uni.edu"] == (
        "decided by the course staff (the automatic check: review), accuracy 85.00%"
    )
    for sent in ("moodle.csv", "canvas.csv", "feedback/amy01.html", "feedback/bob02.html"):
        assert note not in (out / sent).read_text(), sent
    with zipfile.ZipFile(out / "feedback.zip") as archive:
        assert not [name for name in archive.namelist() if note in archive.read(name).decode()]


def test_the_canvas_column_carries_the_assignment_id_canvas_matches_on(
    tmp_path: Path, rubric: object
) -> None:
    """Canvas matches an imported column to an assignment by the id in "Name (id)" (else by the
    exact name, else it creates a new assignment): the id comes from the roster's column of that
    assignment (Canvas's own export has it); without one, the TA hears what to add."""
    from grader.outputs.pages import rerender

    out = tmp_path / "out"
    _stored(out, _result("amy01"))
    exported = ROSTER.splitlines()
    (tmp_path / "canvas-export.csv").write_text(
        "\n".join(
            [exported[0] + ",HW2 (4410),HW3 (4411)", *(line + ",9," for line in exported[1:])]
        )
        + "\n"
    )
    exported_roster = load_roster(tmp_path / "canvas-export.csv")
    said = rerender(out, rubric, {}, exported_roster)  # type: ignore[arg-type]
    canvas = _read(out / "canvas.csv")
    assert list(canvas[0]) == [*CANVAS_COLUMNS, "HW3 (4411)"]
    assert {r["SIS Login ID"]: r["HW3 (4411)"] for r in canvas}["amy01"] == "50"
    assert not [line for line in said if "canvas.csv" in line]
    (tmp_path / "roster.csv").write_text(ROSTER)
    said = rerender(out, rubric, {}, load_roster(tmp_path / "roster.csv"))  # type: ignore[arg-type]
    assert list(_read(out / "canvas.csv")[0])[-1] == "HW3"
    assert said[-1] == _canvas_note(out)
