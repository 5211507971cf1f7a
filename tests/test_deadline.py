"""The rubric's deadline: when a submission came in (zip entry time, file time, commit time), how
late it is, and what that costs by the rubric's policy."""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import subprocess
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from grader.model.context import Context
from grader.model.errors import RubricError
from grader.model.results import Score, Status
from grader.model.rubric import LatePolicy, Rubric, parse_rubric
from grader.model.submission import Submitted
from grader.pipeline.batch import grade_directory
from grader.pipeline.executors.local import LocalExecutor
from grader.run.children import commit_time
from grader.run.slots import plan_slots
from grader.scoring.late import apply, days_late

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
TAIPEI = timezone(timedelta(hours=8))


def _rubric_with(**fields: object) -> Rubric:
    data = yaml.safe_load((ROOT / "rubric.yaml").read_text())
    data.update(fields)
    return parse_rubric(data, ROOT / "rubric.yaml")


def test_deadline_forms_and_errors() -> None:
    expected = datetime(2026, 12, 1, 23, 59, tzinfo=TAIPEI)
    assert _rubric_with(deadline="2026-12-01T23:59:00+08:00").deadline == expected
    assert _rubric_with(deadline="2026-12-01 23:59 Asia/Taipei").deadline == expected
    # YAML reads it as a datetime
    unquoted = yaml.safe_load("deadline: 2026-12-01T23:59:00+08:00")["deadline"]
    assert _rubric_with(deadline=unquoted).deadline == expected
    assert _rubric_with().deadline is None and _rubric_with().late == LatePolicy()
    for bad, says in (
        ("2026-12-01 23:59", "no time zone"),
        ("next friday", "not a time"),
        ("2026-12-01 23:59 Mars/Olympus", "not a time"),
        (5, "must be a time"),
    ):
        with pytest.raises(RubricError, match=says):
            _rubric_with(deadline=bad)
    with pytest.raises(RubricError, match="late.penalty_per_day"):
        _rubric_with(late={"penalty_per_day": -1, "zero_after_days": 0})


def test_days_late_and_the_late_policy() -> None:
    deadline = datetime(2026, 12, 1, 23, 59, tzinfo=TAIPEI)
    assert (
        days_late(deadline, deadline) == 0
        and days_late(deadline - timedelta(days=3), deadline) == 0
    )
    assert days_late(deadline + timedelta(minutes=1), deadline) == 1
    assert days_late(deadline + timedelta(days=1, seconds=1), deadline) == 2
    full = Score(Status.GRADED, 60, 60, 5, None)
    assert apply(full, 0, LatePolicy(10, 3)) == full and apply(full, 2, LatePolicy()) == full
    assert (apply(full, 2, LatePolicy(10, 0)).score, apply(full, 2, LatePolicy(10, 0)).bonus) == (
        48,
        4,
    )
    assert (apply(full, 3, LatePolicy(10, 3)).score, apply(full, 3, LatePolicy(10, 3)).bonus) == (
        0,
        0,
    )
    assert apply(full, 20, LatePolicy(10, 0)).score == 0


def test_a_batch_from_the_lms_zip_marks_who_was_late(tmp_path: Path, tiny_context: Context) -> None:
    """Static only (no run), so the test is fast: the late flag, the note and the gradebook
    columns."""
    deadline = datetime(2026, 12, 1, 23, 59, tzinfo=TAIPEI)
    rubric = dataclasses.replace(tiny_context.rubric, deadline=deadline, late=LatePolicy(10, 0))
    context = dataclasses.replace(tiny_context, rubric=rubric, dataset=None)
    code = (FIXTURES / "HW3_tinyok.py").read_bytes()
    archive = tmp_path / "HW3 submissions.zip"
    # zip entries store this machine's local time
    local = deadline.astimezone().replace(tzinfo=None)
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(
            zipfile.ZipInfo("HW3_early.py", (local - timedelta(hours=5)).timetuple()[:6]), code
        )
        z.writestr(
            zipfile.ZipInfo("HW3_late.py", (local + timedelta(days=1, hours=2)).timetuple()[:6]),
            code,
        )
    out = tmp_path / "out"
    results = {
        r.student: r
        for r in grade_directory(
            archive, out, context, LocalExecutor(plan_slots(1, 2, (), 1, 1))
        ).results
    }
    assert results["early"].late_days == 0 and "late" not in results["early"].flags
    assert results["late"].late_days == 2 and "late" in results["late"].flags
    assert any(
        "after the deadline (2 started days late)" in n and "by its file time" in n
        for n in results["late"].notes
    )
    rows = {r["account"]: r for r in csv.DictReader((out / "gradebook.csv").open())}
    assert rows["late"]["late_days"] == "2" and rows["early"]["late_days"] == "0"
    assert rows["late"]["submitted_at"].startswith(
        (deadline + timedelta(days=1, hours=2)).astimezone(timezone.utc).strftime("%Y-%m-%dT%H")
    )


def test_commit_time_is_read_from_git(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    shutil.copy(FIXTURES / "HW3_tinyok.py", tmp_path / "HW3_ann.py")
    when = "2026-12-02T01:30:00+08:00"
    env = {
        **os.environ,
        "GIT_AUTHOR_DATE": when,
        "GIT_COMMITTER_DATE": when,
        "GIT_AUTHOR_NAME": "a",
        "GIT_AUTHOR_EMAIL": "a@x",
        "GIT_COMMITTER_NAME": "a",
        "GIT_COMMITTER_EMAIL": "a@x",
    }
    subprocess.run(["git", "add", "."], cwd=tmp_path, check=True)
    subprocess.run(["git", "commit", "-qm", "hw3"], cwd=tmp_path, check=True, env=env)
    assert commit_time(tmp_path / "HW3_ann.py") == Submitted(
        datetime(2026, 12, 2, 1, 30, tzinfo=TAIPEI), "commit time"
    )
    (tmp_path / "HW3_new.py").write_text("x = 1\n")
    assert commit_time(tmp_path / "HW3_new.py") is None  # never committed


def test_a_students_own_zip_cannot_backdate_its_files(tmp_path: Path) -> None:
    """Entries of the LMS's export keep their stored times; a zip found inside the class folder is a
    student's, whose stored times they chose: its files get the zip file's time, as do impossible
    dates."""
    from grader.intake.archive import unpack

    code = (FIXTURES / "HW3_tinyok.py").read_bytes()
    folder = tmp_path / "class"
    folder.mkdir()
    own = folder / "HW3_mine.zip"
    with zipfile.ZipFile(own, "w") as z:
        z.writestr(zipfile.ZipInfo("HW3_mine.py", (1980, 1, 1, 0, 0, 0)), code)
    os.utime(own, (1_900_000_000, 1_900_000_000))
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w") as z:
        z.writestr(zipfile.ZipInfo("HW3_a.py", (2026, 11, 30, 12, 0, 0)), code)
        z.writestr(zipfile.ZipInfo("HW3_b.py", (2026, 15, 31, 31, 63, 0)), code)  # no such date
    os.utime(export, (1_800_000_000, 1_800_000_000))
    _, unpacked = unpack(folder, tmp_path / "u1")
    assert (unpacked[0] / "HW3_mine.py").stat().st_mtime == 1_900_000_000
    root, _ = unpack(export, tmp_path / "u2")
    assert datetime.fromtimestamp((root / "export" / "HW3_a.py").stat().st_mtime) == datetime(
        2026, 11, 30, 12, 0, 0
    )
    assert (root / "export" / "HW3_b.py").stat().st_mtime == 1_800_000_000


def test_an_unsandboxed_notebook_gets_none_of_the_ci_runners_files_or_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from grader.run.execute import _host_environment

    for name in (
        "GITHUB_OUTPUT",
        "GITHUB_TOKEN",
        "RUNNER_TEMP",
        "ACTIONS_RUNTIME_TOKEN",
        "CI_JOB_TOKEN",
    ):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("HOME_AWAY", "kept")
    kept = _host_environment()
    assert (
        not [k for k in kept if k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_", "CI_"))]
        and kept["HOME_AWAY"] == "kept"
    )
