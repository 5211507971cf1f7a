"""A batch on the tiny dataset: every student gets a result, a row and a page; nothing is lost."""

from __future__ import annotations

import csv
import dataclasses
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from grader.model.context import Context
from grader.model.results import Result, Status
from grader.pipeline.batch import grade_directory
from grader.pipeline.executors.local import LocalExecutor
from grader.run.slots import Slot, plan_slots

FIXTURES = Path(__file__).parent / "fixtures"
SLOTS = LocalExecutor(plan_slots(2, 2, (), 1, 1))


@pytest.mark.slow
def test_a_mixed_class(
    tmp_path: Path, tiny_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    class_dir = tmp_path / "class"
    (class_dir / "alice").mkdir(parents=True)
    shutil.copy(FIXTURES / "HW3_tinyok.py", class_dir / "alice" / "HW3_alice.py")
    (class_dir / "alice" / "HW3_Report_alice.pdf").write_bytes(b"%PDF-1.4")
    wide = (
        (FIXTURES / "HW3_tinyok.py")
        .read_text()
        .replace("nn.Linear(28 * 28, 512)", "nn.Linear(28 * 28, 640)")
    )
    (class_dir / "HW3_bob.py").write_text(
        wide.replace("nn.Linear(512, 256)", "nn.Linear(640, 256)")
    )
    (class_dir / "HW3_carol.ipynb").write_text("{ this is not json")
    (class_dir / "HW3_Report_dave.pdf").write_bytes(b"%PDF-1.4")
    (class_dir / "random notes.txt").write_text("hi")
    out = tmp_path / "out"
    seen: list[str] = []
    running: list[tuple[str, ...]] = []
    summary = grade_directory(
        class_dir,
        out,
        tiny_context,
        SLOTS,
        lambda p: seen.append(p.result.student) if p.result else running.append(p.running),
    )

    results = {r.student: r for r in summary.results}
    assert sorted(seen) == sorted(results) == ["alice", "bob", "carol", "dave"]
    # the two that ran
    assert sorted(set(name for names in running for name in names)) == ["alice", "bob"]
    assert (
        results["alice"].status is Status.GRADED
        and results["alice"].report_pdf == "HW3_Report_alice.pdf"
    )
    assert results["bob"].status is Status.VIOLATION and results["bob"].score == 0
    assert results["bob"].accuracy is not None  # measured anyway, for the TA
    layers = next(c for c in results["bob"].checks if c.id == "linear_layers")
    assert (
        layers.ok is False
        and "nn.Linear(784, 640) differs from the fixed 784->512" in layers.message
    )
    assert results["carol"].status is Status.ERROR and "broken JSON" in (
        results["carol"].reason or ""
    )
    assert results["dave"].status is Status.ERROR and "only the report PDF" in (
        results["dave"].reason or ""
    )
    assert summary.skipped == (
        ("random notes.txt", "name matches no pattern (HW3_{account}.ipynb)"),
    )

    for student, result in results.items():
        assert Result.read(out / "results" / f"{student}.json") == result
        assert (out / "students" / f"{student}.html").is_file()
    rows = list(csv.DictReader((out / "gradebook.csv").open()))
    assert [r["account"] for r in rows] == ["alice", "bob", "carol", "dave"]
    assert (
        rows[0]["automatic_score"] == "60"
        and rows[0]["bonus"] == "5"
        and rows[0]["report_present"] == "yes"
    )
    assert (out / "executed" / "HW3_alice.ipynb").exists() is False and (
        out / "executed" / "alice.ipynb"
    ).is_file()
    index = (out / "index.html").read_text()
    assert 'href="students/bob.html"' in index and "random notes.txt" in index


def test_an_internal_failure_costs_only_that_student(
    tmp_path: Path, tiny_context: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    import grader.pipeline.executors.local

    real = grader.pipeline.executors.local.grade_one

    def flaky(sub, context, slot, seed=None, keep=None):  # type: ignore[no-untyped-def]
        if sub.account == "boom":
            raise RuntimeError("disk on fire")
        return real(sub, context.__class__(context.rubric, context.facts, None), slot, seed, keep)

    monkeypatch.setattr(grader.pipeline.executors.local, "grade_one", flaky)
    (tmp_path / "class").mkdir()
    for account in ("boom", "fine"):
        shutil.copy(FIXTURES / "HW3_tinyok.py", tmp_path / "class" / f"HW3_{account}.py")
    summary = grade_directory(tmp_path / "class", tmp_path / "out", tiny_context, SLOTS)
    results = {r.student: r for r in summary.results}
    assert (
        results["boom"].status is Status.ERROR
        and ("internal grader error: RuntimeError: disk on fire") == results["boom"].reason
    )
    assert results["fine"].status is Status.GRADED


def test_slots_share_cores_and_gpus() -> None:
    assert plan_slots(None, 2, (), 1, 2) == (Slot(0, 2, None),)
    assert plan_slots(None, 16, (), 1, 2) == tuple(Slot(i, 2, None) for i in range(8))
    assert plan_slots(3, 16, (), 1, 2) == tuple(Slot(i, 2, None) for i in range(3))
    assert plan_slots(2, 2, (), 1, 2) == tuple(Slot(i, 2, None, crowded=True) for i in range(2))
    assert [s.gpu for s in plan_slots(None, 16, ("0", "1"), 4, 2)] == ["0"] * 4 + ["1"] * 4
    assert [s.gpu for s in plan_slots(3, 8, ("5",), 1, 2)] == ["5", "5", "5"]


@pytest.mark.slow
def test_a_rerun_reuses_finished_results_and_regrades_what_changed(
    tmp_path: Path, tiny_context: Context
) -> None:
    class_dir = tmp_path / "class"
    class_dir.mkdir()
    for account in ("ann", "ben"):
        shutil.copy(FIXTURES / "HW3_tinyok.py", class_dir / f"HW3_{account}.py")
    out = tmp_path / "out"
    first = grade_directory(class_dir, out, tiny_context, SLOTS)
    assert first.cached == 0 and all(r.cache_key for r in first.results)
    # A batch killed after writing ann's result: ben's is gone, and ann's file was damaged on
    # another try.
    (out / "results" / "ben.json").unlink()
    again = grade_directory(class_dir, out, tiny_context, SLOTS)
    assert again.cached == 1 and [r.student for r in again.results] == ["ann", "ben"]
    assert [replace(r, duration_s=0) for r in again.results] == [
        replace(r, duration_s=0) for r in first.results
    ]
    # A changed submission has another key, under which its stored result is not reused (the same
    # lookup as a missing one's, above: no third batch needed); --force grades everything.
    from grader.intake.read import read_submission
    from grader.pipeline.cache import batch_key, cache_key, environment_key, reusable

    stored, batch = out / "results" / "ann.json", batch_key(tiny_context, environment_key("cpu"))
    key = cache_key(read_submission(class_dir / "HW3_ann.py", "ann"), batch)
    assert key == first.results[0].cache_key and reusable(stored, key) is not None
    (class_dir / "HW3_ann.py").write_text(
        (FIXTURES / "HW3_tinyok.py").read_text() + "\nprint('changed')\n"
    )
    changed = read_submission(class_dir / "HW3_ann.py", "ann")
    assert reusable(stored, cache_key(changed, batch)) is None
    assert grade_directory(class_dir, out, tiny_context, SLOTS, force=True).cached == 0
    rows = (out / "gradebook.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["ann", "ben"]


def test_a_zip_from_the_lms_is_unpacked_safely(tmp_path: Path, tiny_context: Context) -> None:
    import zipfile

    from grader.intake.archive import unpack
    from grader.model.errors import SubmissionError

    archive = tmp_path / "HW3 submissions.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(FIXTURES / "HW3_tinyok.py", "HW3/alice/HW3_alice.py")
        zipped.writestr("__MACOSX/HW3/._HW3_alice.py", "junk")
    folder = tmp_path / "class"
    folder.mkdir()
    shutil.copy(archive, folder / archive.name)
    shutil.copy(FIXTURES / "HW3_tinyok.py", folder / "HW3_bob.py")
    for source in (archive, folder):  # the zip itself, or a folder holding it
        out = tmp_path / f"out-{source.suffix or 'dir'}"
        summary = grade_directory(
            source, out, dataclasses.replace(tiny_context, dataset=None), SLOTS
        )
        expected = ["alice"] if source == archive else ["alice", "bob"]
        assert [r.student for r in summary.results] == expected and summary.skipped == ()
        assert not (folder / "HW3").exists()  # never unpacked beside the TA's files
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("../../escape.py", "x = 1")
    with pytest.raises(SubmissionError, match="points outside the archive"):
        unpack(evil, tmp_path / "unpacked")


def test_running_jobs_hold_distinct_indices_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    from grader.run.slots import claim_index

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom grader.run.slots import claim_index\n"
            f"with claim_index(Path({str(tmp_path)!r})) as i:\n"
            "    print(i, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "0"
        with claim_index(tmp_path) as first, claim_index(tmp_path) as second:
            assert (first, second) == (1, 2)  # another process holds 0
    finally:
        holder.kill()
        holder.wait()
    with claim_index(tmp_path) as again:
        assert again == 0  # freed when its holder died


@pytest.mark.slow
def test_one_student_regraded_into_an_existing_out_keeps_the_class(
    tmp_path: Path, tiny_context: Context
) -> None:
    """`--only` regrades just that account; grading another folder into OUT adds to the gradebook;
    an override for an account nobody has, an --only naming nobody, and OUT inside the submissions
    folder are refused with the name, before anything runs."""
    from grader.model.errors import GraderError
    from grader.scoring.overrides import Override

    class_dir, one = tmp_path / "class", tmp_path / "one"
    class_dir.mkdir()
    one.mkdir()
    for account in ("ann", "ben"):
        shutil.copy(FIXTURES / "HW3_tinyok.py", class_dir / f"HW3_{account}.py")
    shutil.copy(FIXTURES / "HW3_tinyok.py", one / "HW3_cid.py")
    out = tmp_path / "out"
    grade_directory(class_dir, out, tiny_context, SLOTS)
    again = grade_directory(class_dir, out, tiny_context, SLOTS, only=frozenset({"ben"}))
    assert again.cached == 0 and [r.student for r in again.results] == ["ben"]
    grade_directory(one, out, tiny_context, SLOTS)
    rows = (out / "gradebook.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["ann", "ben", "cid"]
    with pytest.raises(GraderError, match="no submission or result for nobody99"):
        grade_directory(
            class_dir, out, tiny_context, SLOTS, overrides={"nobody99": Override(points=10)}
        )
    with pytest.raises(GraderError, match="--only: no submission for dan"):
        grade_directory(class_dir, out, tiny_context, SLOTS, only=frozenset({"dan"}))
    with pytest.raises(GraderError, match="is inside the submissions folder"):
        grade_directory(class_dir, class_dir / "out", tiny_context, SLOTS)
    assert not (class_dir / "out").exists()
