"""`grader check --package`: what the TA will receive, checked before it is sent."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from pdfs import make_pdf

from grader.cli import ExitCode, main
from grader.model.findings import Flag, flags_of, notes_of
from grader.model.rubric import Rubric
from grader.pipeline.grade import report_headline as headline
from grader.pipeline.package import against_measured, inspect

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "reference" / "HW3_template"


def _package(folder: Path, account: str = "ann", report: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(f"{TEMPLATE}.ipynb", folder / f"HW3_{account}.ipynb")
    shutil.copy(f"{TEMPLATE}.py", folder / f"HW3_{account}.py")
    make_pdf(
        folder / f"HW3_Report_{account}.pdf",
        report if report is not None else ["Best accuracy: 90.28%", "Methods"],
    )
    return folder


def test_the_report_headline_is_read_from_real_pdfs(tmp_path: Path) -> None:
    assert (
        headline(
            make_pdf(tmp_path / "a.pdf", ["Best accuracy: 90.28%", "I used AdamW (lr 3e-3)"])
        ).accuracy
        == 90.28
    )
    late = headline(
        make_pdf(tmp_path / "b.pdf", ["HW3 report, M112rhyang", "Best Accuracy : 88,5 %"])
    )
    assert late.accuracy == 88.5 and not late.first_line
    missing = headline(make_pdf(tmp_path / "c.pdf", ["My accuracy was good"]))
    assert missing.accuracy is None and "Best accuracy: xx.xx%" in (missing.problem or "")
    (tmp_path / "d.pdf").write_bytes(
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\ntrailer << /Root 1 0 R >>"
    )
    broken = headline(tmp_path / "d.pdf")
    assert broken.accuracy is None and "export the report again" in (broken.problem or "")


def test_matplotlib_pdf_with_embedded_fonts_is_read(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(8.5, 11))
    figure.text(0.1, 0.9, "Best accuracy: 89.61%", fontsize=16)
    figure.text(0.1, 0.8, "Loss curves below", fontsize=12)
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        figure.savefig(tmp_path / "r.pdf")
    plt.close(figure)
    assert headline(tmp_path / "r.pdf").accuracy == 89.61


def test_a_complete_package_is_ready(tmp_path: Path, rubric: Rubric) -> None:
    package = inspect([_package(tmp_path / "p")], rubric.files)
    assert (
        package.account == "ann"
        and package.problems == ()
        and package.headline
        and package.headline.accuracy == 90.28
    )
    assert against_measured(package, 90.0, 0.5).problems == ()
    off = against_measured(package, 89.1, 0.5).problems
    assert len(off) == 1 and "states Best accuracy 90.28%" in off[0] and "89.10%" in off[0]


def test_each_problem_is_one_line_saying_what_to_fix(tmp_path: Path, rubric: Rubric) -> None:
    folder = _package(tmp_path / "p", report=["Results", "accuracy 90%"])
    (folder / "HW3_ann.py").unlink()
    (folder / "hw3-ann.ipynb").write_text("{}")
    problems = inspect([folder], rubric.files).problems
    assert any(
        "hw3-ann.ipynb does not follow the name" in p and "HW3_{account}.ipynb" in p
        for p in problems
    )
    assert any(p.startswith("HW3_ann.py is missing") and "Download .py" in p for p in problems)
    assert any("Best accuracy: xx.xx%" in p for p in problems)
    assert all("\n" not in p for p in problems)


def test_two_accounts_and_a_stale_script_are_named(tmp_path: Path, rubric: Rubric) -> None:
    folder = _package(tmp_path / "p")
    (folder / "HW3_Report_ann.pdf").rename(folder / "HW3_Report_bob.pdf")
    script = folder / "HW3_ann.py"
    script.write_text(script.read_text().replace("n_epochs = 10", "n_epochs = 12"))
    problems = inspect([folder], rubric.files).problems
    assert any("different accounts" in p and "ann:" in p and "bob:" in p for p in problems)
    assert any(
        "HW3_ann.py differs from the notebook in 1 code line" in p and "download the .py again" in p
        for p in problems
    )


def test_cli_package_exit_codes_and_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _package(tmp_path / "p")
    assert main(["check", "--package", str(folder)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "ready to submit" in out and "states Best accuracy 90.28%" in out
    files = [str(folder / n) for n in ("HW3_ann.ipynb", "HW3_ann.py", "HW3_Report_ann.pdf")]
    assert main(["check", "--package", *files]) == ExitCode.OK
    (folder / "HW3_Report_ann.pdf").unlink()
    assert main(["check", "--package", str(folder)]) == ExitCode.FAILED
    assert "FIX:      HW3_Report_ann.pdf is missing" in capsys.readouterr().out
    assert main(["check", *files[:2]]) == ExitCode.USAGE  # two files without --package


def test_the_band_names_the_next_threshold(rubric: Rubric) -> None:
    from grader.scoring.score import band

    assert band(rubric, 85.2) == dataclasses.replace(
        band(rubric, 85.2), points=50, reached=84, next_at=89, next_gain="60 points"
    )
    assert (
        band(rubric, 89.5).next_gain == "the 5 bonus points" and band(rubric, 90.1).next_at is None
    )
    assert band(rubric, 12.0).reached is None and band(rubric, 12.0).next_at == 80


def test_hostile_reports_cost_at_most_the_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report is the student's file: a parser-spinning PDF is cut at the time limit, a link to a
    device or a FIFO is refused, an AES-encrypted report with no password is read, odd bytes are a
    problem line."""
    import os

    from pdfs import make_slow_pdf
    from pypdf import PdfReader, PdfWriter

    import grader.run.children as report_pdf

    monkeypatch.setattr(report_pdf, "PARSE_SECONDS", 2)
    slow = headline(make_slow_pdf(tmp_path / "slow.pdf"))
    assert slow.accuracy is None and "took over 2 s to read" in (slow.problem or "")
    (tmp_path / "zero.pdf").symlink_to("/dev/zero")
    assert "a symbolic link" in (headline(tmp_path / "zero.pdf").problem or "")
    os.mkfifo(tmp_path / "fifo.pdf")
    assert "not a regular file" in (headline(tmp_path / "fifo.pdf").problem or "")
    writer = PdfWriter(
        clone_from=PdfReader(make_pdf(tmp_path / "plain.pdf", ["Best accuracy: 89.90%"]))
    )
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-256")
    with (tmp_path / "aes.pdf").open("wb") as handle:
        writer.write(handle)
    assert headline(tmp_path / "aes.pdf").accuracy == 89.9
    (tmp_path / "odd.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 50)
    odd = headline(tmp_path / "odd.pdf")
    assert odd.accuracy is None and odd.problem is not None and "\n" not in odd.problem


def test_a_batch_shows_the_students_own_run_and_the_reports_figure_beside_the_grade(
    tmp_path: Path, tiny_context: object
) -> None:
    """The accuracy the student saw (the outputs saved in the submitted .ipynb, often from a Colab
    GPU)
    and the report's "Best accuracy" are read in the batch, kept beside the measured one, shown on
    the pages and the gradebook; a report far from the measured accuracy is flagged."""
    import csv
    import json

    import nbformat

    from grader.intake.read import read_submission
    from grader.model.submission import Submission
    from grader.pipeline.batch import grade_directory
    from grader.pipeline.executors.local import LocalExecutor
    from grader.pipeline.grade import _stated
    from grader.run.slots import plan_slots

    folder = tmp_path / "class"
    folder.mkdir()
    code = (Path(__file__).parent / "fixtures" / "HW3_tinyok.py").read_text()
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                code,
                outputs=[
                    nbformat.v4.new_output(
                        "stream", name="stdout", text="Epoch: 10 \tValidation Accuracy: 91.2%\n"
                    ),
                    nbformat.v4.new_output(
                        "stream",
                        name="stdout",
                        text="Test Accuracy (Overall): 89.47% (8947/10000)\n",
                    ),
                ],
            )
        ]
    )
    nbformat.write(notebook, str(folder / "HW3_amy.ipynb"))
    make_pdf(folder / "HW3_Report_amy.pdf", ["Best accuracy: 89.9%", "<script>x</script>"])
    out = tmp_path / "out"
    static = dataclasses.replace(tiny_context, dataset=None)  # type: ignore[type-var]
    summary = grade_directory(folder, out, static, LocalExecutor(plan_slots(1, 2, (), 1, 1)))
    result = summary.results[0]
    assert (result.saved_accuracy, result.report_accuracy) == (89.47, 89.9)
    assert json.loads((out / "results" / "amy.json").read_text())["saved_accuracy"] == 89.47
    row = next(csv.DictReader((out / "gradebook.csv").open()))
    assert (row["saved_accuracy"], row["report_accuracy"]) == ("89.47", "89.9")
    page = (out / "students" / "amy.html").read_text()
    assert "In the submitted notebook" in page and "89.47%" in page and "The report states" in page
    # Measured 88.2%: the report's 89.9% is further than the tolerance: flagged, with both numbers.
    report = headline(folder / "HW3_Report_amy.pdf")
    _saved, _report, stated = _stated(
        Submission("amy", folder / "HW3_amy.ipynb", ()), report, 88.2, 0.5
    )
    assert flags_of(stated) == (Flag.REPORT_ACCURACY_DIFFERS,)
    assert "89.9% but the grader measured 88.20%" in notes_of(stated)[0]
    # no report: no flag
    assert _stated(read_submission(folder / "HW3_amy.ipynb", "amy"), None, 89.5, 0.5)[2] == ()


def test_a_long_line_of_digits_or_spaces_is_read_in_linear_time(tmp_path: Path) -> None:
    """A saved output "Test accuracy 111...1" and a report "Best accuracy" + a million spaces once
    made
    the patterns backtrack for hours while holding the GIL (every grading thread of the batch
    stopped).
    Both must come back; the subprocess's limit is a hang guard, generous on any machine."""
    import subprocess
    import sys

    script = (
        "from grader.judge.measure import reported_accuracy\nfrom grader.judge.stated import "
        "_BEST\nassert reported_accuracy('Test accuracy ' + '1' * 1_000_000) is None\n"
        "assert _BEST.search('Best accuracy' + ' ' * 2_000_000) is None\n"
        "assert reported_accuracy('Test Accuracy (Overall): 89.47% (8947/10000)') == 89.47\n"
        "assert _BEST.search('Best accuracy: 89.9%').group(1) == '89.9'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_a_report_over_100_percent_or_a_forged_record_key_is_refused_not_believed(
    tmp_path: Path,
) -> None:
    from grader.model.probe_facts import parse

    found = headline(make_pdf(tmp_path / "r.pdf", ["Best accuracy: 999%"]))
    assert found.accuracy is None and found.problem and "over 100%" in found.problem
    # "²".isdigit() is True but int("²") raises: a forged probe record's keys are read as ASCII
    # digits only.
    record = parse(
        {
            "optimizers": {"²": {"params": [1]}, "3": {"params": [2], "steps": 1}},
            "train_size": 8,
            "train_passes": [{"source": "loader", "drawn": "AA==", "steps": {"²": 1, "4": 2}}],
        }
    )
    assert list(record.optimizers) == [3] and record.train.passes[0].steps == {4: 2}
