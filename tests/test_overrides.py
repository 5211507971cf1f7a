"""The TA's overrides: kept beside the automatic results, shown with the total, kept by every
regrade, and `grader report OUT` renders everything again without running anything."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path

import pytest

from grader.cli import ExitCode, main
from grader.model.context import Context
from grader.model.errors import GraderError
from grader.model.results import Result
from grader.model.rubric import Rubric
from grader.pipeline.batch import grade_directory
from grader.pipeline.executors.local import LocalExecutor
from grader.run.slots import plan_slots
from grader.scoring.overrides import for_batch, parse_overrides

FIXTURES = Path(__file__).parent / "fixtures"
RUBRIC = Path(__file__).parent.parent / "rubric.yaml"


def _rows(out: Path) -> dict[str, dict[str, str]]:
    return {r["account"]: r for r in csv.DictReader((out / "gradebook.csv").open())}


def test_overrides_survive_a_forced_regrade_and_a_rerender(
    tmp_path: Path, tiny_context: Context
) -> None:
    folder = tmp_path / "class"
    folder.mkdir()
    for account in ("amy01", "bob02"):
        shutil.copy(FIXTURES / "HW3_tinyok.py", folder / f"HW3_{account}.py")
    (folder / "notes.txt").write_text("not a submission")
    out = tmp_path / "out"
    # 0 automatic points: the overrides are what shows
    static = dataclasses.replace(tiny_context, dataset=None)
    executor = LocalExecutor(plan_slots(1, 2, (), 1, 1))
    grade_directory(folder, out, static, executor)
    before = {p.name: p.read_bytes() for p in (out / "results").glob("*.json")}
    (out / "overrides.yaml").write_text(
        "amy01: {report_points: 35, bonus: 5, note: excellent report}\n"
        "bob02: {points: 50, note: '<b>regraded</b> after the complaint'}\n"
    )
    grade_directory(
        folder, out, static, executor, force=True, overrides=for_batch(out, None, static.rubric)
    )
    rows = _rows(out)
    assert (
        rows["amy01"]["report_points"],
        rows["amy01"]["override_bonus"],
        rows["amy01"]["total"],
    ) == ("35", "5", "40")
    assert (
        rows["bob02"]["automatic_score"],
        rows["bob02"]["override_points"],
        rows["bob02"]["total"],
    ) == ("0", "50", "50")
    after = {p.name: Result.read(p) for p in (out / "results").glob("*.json")}
    # never overwritten
    assert sorted(after) == sorted(before) and all(
        r.score == 0 and r.bonus == 0 for r in after.values()
    )
    page = (out / "students" / "bob02.html").read_text()
    assert (
        "Set by the TA" in page
        and "&lt;b&gt;regraded&lt;/b&gt;" in page
        and "<b>regraded" not in page
    )

    (out / "gradebook.csv").unlink()
    (out / "index.html").unlink()
    (out / "overrides.yaml").write_text("amy01: {report_points: 38}\n")
    assert main(["report", str(out)]) == ExitCode.OK
    rows = _rows(out)
    assert rows["amy01"]["total"] == "38" and rows["bob02"]["total"] == "0"
    assert "notes.txt" in (out / "index.html").read_text()  # the files not graded are listed again


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"amy": {"points": 70}}, "amy.points must be a whole number from 0 to 60"),
        ({"amy": {"report_points": -1}}, "amy.report_points"),
        ({"amy": {"grade": 5}}, "amy.grade is not a field"),
        ({"amy": 5}, "amy must be a mapping"),
        (["amy"], "must map accounts"),
        ({"amy": {"note": 3}}, "amy.note must be text"),
    ],
)
def test_a_wrong_override_is_one_line_naming_the_field(
    rubric: Rubric, data: object, says: str
) -> None:
    with pytest.raises(GraderError, match=says):
        parse_overrides(data, rubric)


def test_report_needs_a_graded_out_and_an_existing_overrides_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path)]) == ExitCode.USAGE
    assert "no results/ folder" in capsys.readouterr().err
    (tmp_path / "results").mkdir()
    assert (
        main(["report", str(tmp_path), "--overrides", str(tmp_path / "nope.yaml")])
        == ExitCode.USAGE
    )
    assert "no such file" in capsys.readouterr().err


def _graded(out: Path, name: str) -> None:
    from grader.model.results import Status

    Result(
        student=name,
        source=f"HW3_{name}.ipynb",
        status=Status.GRADED,
        accuracy=85.0,
        reported_accuracy=None,
        score=50,
        max_score=60,
        bonus=0,
        checks=(),
        flags=(),
        duration_s=1.0,
    ).write(out / "results" / f"{name}.json")


def test_report_names_each_file_it_wrote_and_the_overrides_it_applied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("amy01", "bob02", "cat03"):
        _graded(tmp_path, name)
    report = ["report", str(tmp_path), "--rubric", str(RUBRIC)]
    assert main(report) == ExitCode.OK
    assert capsys.readouterr().out.splitlines() == [
        f"3 results in {tmp_path / 'results'} rendered again",
        f"wrote {tmp_path / 'gradebook.csv'}: the gradebook, a row per student (totals with the "
        "overrides)",
        f"wrote {tmp_path / 'index.html'}: the class page (Review first, bands, every student)",
        f"wrote {tmp_path / 'students'}/: a page per student, for staff (with the overrides' "
        "notes)",
        f"wrote {tmp_path / 'feedback.zip'}: a page per student to send back (also in "
        f"{tmp_path / 'feedback'}/; no staff notes)",
        f"no overrides ({tmp_path / 'overrides.yaml'} not found)",
    ]
    (tmp_path / "overrides.yaml").write_text(
        "cat03: {points: 60}\namy01: {report_points: 30, note: x}\n"
    )
    (tmp_path / "roster.csv").write_text("account,Username\namy01,amy\nbob02,bob\ncat03,cat\n")
    assert main([*report, "--roster", str(tmp_path / "roster.csv")]) == ExitCode.OK
    printed = capsys.readouterr().out.splitlines()
    moodle = (
        f"wrote {tmp_path / 'moodle.csv'}: Moodle's grade import (a grade and a feedback column)"
    )
    kept = (
        f"wrote {tmp_path / 'roster.csv'}: a copy of the roster; a later run without --roster "
        "exports from it"
    )
    assert moodle in printed and kept in printed
    assert not [line for line in printed if "canvas" in line]
    assert printed[-1] == f"2 overrides applied (from {tmp_path / 'overrides.yaml'}): amy01, cat03"


def test_an_override_for_an_unknown_account_or_field_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in overrides.yaml is refused by name (with the nearest account); nothing written."""
    _graded(tmp_path, "amy01")
    report = ["report", str(tmp_path), "--rubric", str(RUBRIC)]
    for text, says in (
        ("amy1: {points: 60}\n", "no submission or result for amy1; did you mean amy01?"),
        ("amy01: {epochs: ok}\n", "amy01.epochs is not a field"),
    ):
        (tmp_path / "overrides.yaml").write_text(text)
        assert main(report) == ExitCode.USAGE
        assert says in capsys.readouterr().err and not (tmp_path / "gradebook.csv").exists()
